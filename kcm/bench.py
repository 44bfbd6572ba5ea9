"""``kcm bench``: every method on the same long-tailed stream and test set, for each seed.

Five full continual runs per seed (in-process, the same pipeline steps as the flows, MLflow,
DVC and plots off): ``kcm`` (KAN judge), ``mcm`` (MLP judge), ``kcm_no_hint`` (no prompt
modification / no fusion), ``kcm_no_distill`` (labels only) and ``kd`` (every stream sample goes
to the large model and is distilled; the small model then answers alone). The other methods
are read off the ``kcm`` run's final state: ``large_only``, ``small_only`` (the labels-only
baseline trained alongside), ``cascade`` (the small model's own max-softmax as the score),
``random`` and ``oracle``.

Views: *traffic* (test samples in the stream's long-tailed proportions) for ``accuracy``,
``large_call_rate``, ``throughput_sps``, ``judge_auroc`` and ``apgr``; *balanced* (the whole
test set) for ``accuracy_balanced`` and Many / Medium / Few. Routers are scored at their own
threshold, at the large-call rate ``kcm`` reaches (``accuracy_at_kcm_rate``) and at a fixed
large-call budget (``accuracy_at_budget``, default 0.30 of the traffic), each through its own
serving path (the hint included).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kcm import loop, routing
from kcm.config import KCMConfig, config_to_dict, with_overrides
from kcm.data.batch import Batch
from kcm.errors import ConfigError
from kcm.evaluation.curves import apgr, ceiling, tradeoff_curve
from kcm.evaluation.metrics import auroc
from kcm.evaluation.report import view_metrics
from kcm.report import machine
from kcm.steps import feed, load_baseline
from kcm.steps.systems import challenger
from kcm.system import CollaborationSystem
from kcm.workspace import Workspace

log = logging.getLogger(__name__)

Answers = Literal["system", "router", "large", "baseline", "small"]


@dataclass(frozen=True)
class Method:
    """One bench method. ``overrides``: the config changes of its own continual run (None:
    it is read off the ``kcm`` run's final state). ``answers``: how it answers (its scorer in
    ``SCORERS``). ``route``: the routing mode of a router. ``scored``: it has a routing score
    (AUROC, APGR, a trade-off curve)."""

    name: str
    overrides: tuple[str, ...] | None
    answers: Answers
    route: routing.Mode = "judge"
    scored: bool = False


METHODS_TABLE: tuple[Method, ...] = (
    Method("large_only", None, "large"),
    Method("small_only", None, "baseline"),
    # everything goes to the large model and is distilled (C_x > 1 never holds); the small
    # model then answers alone
    Method("kd", ("routing.epsilon=1.0",), "small"),
    Method("cascade", None, "router", route="cascade", scored=True),
    Method("random", None, "router", route="random", scored=True),
    Method("oracle", None, "router", route="oracle", scored=True),
    Method("mcm", ("judge.kind=mlp",), "system", scored=True),
    Method("kcm", (), "system", scored=True),
    Method("kcm_no_hint", ("large.hint=false",), "system", scored=True),
    Method("kcm_no_distill", ("distill.enabled=false",), "system", scored=True),
)
METHODS = tuple(m.name for m in METHODS_TABLE)
ROUTERS = tuple(m.name for m in METHODS_TABLE if m.scored)
RUNS: dict[str, list[str]] = {
    m.name: list(m.overrides)
    for m in sorted(METHODS_TABLE, key=lambda m: m.name != "kcm")
    if m.overrides is not None
}
METRICS = (
    "accuracy",
    "large_call_rate",
    "accuracy_at_kcm_rate",
    "accuracy_at_budget",
    "accuracy_balanced",
    "accuracy_many",
    "accuracy_medium",
    "accuracy_few",
    "throughput_sps",
    "throughput_at_budget_sps",
    "bwt",
    "forgetting_few",
    "judge_auroc",
    "apgr",
)
QUIET = ["registry.enabled=false", "dvc.enabled=false", "eval.plots=false"]


def check_budget(budget: float) -> float:
    if not 0.0 <= budget <= 1.0:
        raise ConfigError(f"--budget {budget}: give a large-call rate in [0, 1], e.g. 0.3")
    return budget


def _run(cfg: KCMConfig, root: Path, share_cache_from: Path | None) -> dict[str, Any]:
    """One continual run in ``root`` (the large model's answer/embedding cache is copied from
    an earlier run of the same seed: the same inputs are never encoded twice)."""
    with tempfile.TemporaryDirectory(prefix="kcm-bench-inbox-") as inbox:
        ws = Workspace(root, inbox)
        if share_cache_from is not None and share_cache_from.is_file():
            ws.state.mkdir(parents=True, exist_ok=True)
            shutil.copy(share_cache_from, ws.state / share_cache_from.name)
        feed(cfg, inbox)
        return loop.run(cfg, ws)


def _fresh_cache(system: CollaborationSystem) -> None:
    """Throughput is measured without the answer cache (a new, empty in-memory one)."""
    from kcm.models.cache import ResponseCache

    system.large.cache = ResponseCache()


def _throughput(system: CollaborationSystem, fn: Callable[[], Any], n: int) -> float:
    """Samples per second of ``fn``: one untimed warm-up call (lazy model loads, thread
    pools), then the answer cache is emptied and the timed call pays for every large answer.
    The cache is emptied before the warm-up too: answered from the run's cache, the warm-up
    would not load the large model, and the timed call would pay for loading it."""
    _fresh_cache(system)
    fn()
    _fresh_cache(system)
    t0 = time.perf_counter()
    fn()
    return n / max(time.perf_counter() - t0, 1e-9)


class _Answer:
    """A small model's answers in the shape ``view_metrics`` reads."""

    def __init__(self, label: np.ndarray) -> None:
        self.label = np.asarray(label)
        self.to_large = np.zeros(len(self.label), dtype=bool)


@dataclass
class Context:
    """What every scorer of one seed reads: the views, the runs' final systems and reports,
    and the kcm run's reference answers."""

    seed: int
    budget: float
    traffic: Batch
    balanced: Batch
    sample: Batch
    groups: dict[int, str]
    systems: dict[str, CollaborationSystem]
    reports: dict[str, dict[str, Any]]
    workspaces: dict[str, Workspace]
    curves: dict[str, Any] = field(default_factory=dict)
    kcm_rate: float = 0.0
    small_label: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    large_t: Any = None  # the kcm run's large model on traffic, without the hint
    hinted: Any = None  # the same with the hint

    def row(self, pt: Any, pb: Any, **extra: Any) -> dict[str, float | None]:
        mt = view_metrics(pt.label, self.traffic.y_true, pt.to_large, self.groups)
        mb = view_metrics(pb.label, self.balanced.y_true, pb.to_large, self.groups)
        r: dict[str, float | None] = {
            "accuracy": mt["accuracy"],
            "large_call_rate": mt["large_call_rate"],
            "accuracy_balanced": mb["accuracy"],
            "accuracy_many": mb["accuracy_many"],
            "accuracy_medium": mb["accuracy_medium"],
            "accuracy_few": mb["accuracy_few"],
        }
        r.update(extra)
        return r

    def acc(self, label: np.ndarray) -> float:
        return float((label == self.traffic.y_true).mean())


def _score_system(ctx: Context, m: Method) -> dict[str, float | None]:
    """A full system (its own run): at its ε, at kcm's rate and at the budget."""
    s, y_t = ctx.systems[m.name], ctx.traffic.y_true
    pt, pb = s.predict(ctx.traffic), s.predict(ctx.balanced)
    small_label = pt.small_proba.argmax(axis=1)
    large_t = s.predict(ctx.traffic, route="large", use_hint=False).label
    curve = ctx.curves[m.name] = tradeoff_curve(pt.confidence, small_label, large_t, y_t)
    fg = ctx.reports[m.name]["forgetting"]
    return ctx.row(
        pt,
        pb,
        accuracy_at_kcm_rate=ctx.acc(s.predict(ctx.traffic, target_rate=ctx.kcm_rate).label),
        accuracy_at_budget=ctx.acc(s.predict(ctx.traffic, target_rate=ctx.budget).label),
        judge_auroc=auroc(pt.confidence, small_label == y_t),
        apgr=apgr(curve),
        bwt=fg.get("bwt"),
        forgetting_few=fg.get("forgetting_few"),
        throughput_sps=_throughput(s, lambda: s.predict(ctx.sample), len(ctx.sample)),
        throughput_at_budget_sps=_throughput(
            s, lambda: s.predict(ctx.sample, target_rate=ctx.budget), len(ctx.sample)
        ),
    )


def _router_score(ctx: Context, m: Method, s: CollaborationSystem) -> np.ndarray:
    """The routing score on traffic for the trade-off curve (random: a fixed seeded draw)."""
    if m.route == "random":
        return np.random.default_rng(ctx.seed + 1).random(len(ctx.traffic))
    if m.route == "oracle":
        return (ctx.small_label == ctx.traffic.y_true).astype(float)
    return s.predict(ctx.traffic, route=m.route, call_large=False).confidence


def _score_router(ctx: Context, m: Method) -> dict[str, float | None]:
    """Another routing score over the kcm run's small and large models. ``random`` is scored
    at kcm's rate; the oracle at a rate is the true ceiling (``ceiling``)."""
    s, y_t, sample = ctx.systems["kcm"], ctx.traffic.y_true, ctx.sample
    at_eps: dict[str, Any] = (
        {"target_rate": ctx.kcm_rate} if m.route == "random" else {"epsilon": s.cfg.routing.epsilon}
    )
    pt = s.predict(ctx.traffic, route=m.route, **at_eps)
    pb = s.predict(ctx.balanced, route=m.route, **at_eps)
    if m.route == "oracle":
        at = ceiling(ctx.small_label, ctx.hinted.label, y_t, ctx.kcm_rate)
        at_budget = ceiling(ctx.small_label, ctx.hinted.label, y_t, ctx.budget)
    else:
        at = (
            pt.label
            if m.route == "random"
            else s.predict(ctx.traffic, route=m.route, target_rate=ctx.kcm_rate).label
        )
        at_budget = s.predict(ctx.traffic, route=m.route, target_rate=ctx.budget).label
    score = _router_score(ctx, m, s)
    curve = ctx.curves[m.name] = tradeoff_curve(score, ctx.small_label, ctx.large_t.label, y_t)
    extra: dict[str, float | None] = {}
    if m.route == "cascade":  # the oracle has no serving path at a budget
        extra["throughput_at_budget_sps"] = _throughput(
            s, lambda: s.predict(sample, route="cascade", target_rate=ctx.budget), len(sample)
        )
    return ctx.row(
        pt,
        pb,
        accuracy_at_kcm_rate=ctx.acc(at),
        accuracy_at_budget=ctx.acc(at_budget),
        judge_auroc=auroc(score, ctx.small_label == y_t),
        apgr=apgr(curve),
        throughput_sps=_throughput(
            s, lambda: s.predict(sample, route=m.route, **at_eps), len(sample)
        ),
        **extra,
    )


def _score_large(ctx: Context, m: Method) -> dict[str, float | None]:
    s = ctx.systems["kcm"]
    lb = s.predict(ctx.balanced, route="large", use_hint=False)
    return ctx.row(
        ctx.large_t,
        lb,
        throughput_sps=_throughput(
            s, lambda: s.predict(ctx.sample, route="large", use_hint=False), len(ctx.sample)
        ),
    )


def _score_baseline(ctx: Context, m: Method) -> dict[str, float | None]:
    """The labels-only small model trained alongside the kcm run."""
    s, ws = ctx.systems["kcm"], ctx.workspaces["kcm"]
    version = ws.load_ledger().challenger
    assert version is not None
    baseline = load_baseline(ws, s, version)

    def answer(b: Batch) -> _Answer:
        return _Answer(baseline.predict(s.featurize(b).small))

    fg = ctx.reports["kcm"]["forgetting_small_only"]
    return ctx.row(
        answer(ctx.traffic),
        answer(ctx.balanced),
        bwt=fg.get("bwt"),
        forgetting_few=fg.get("forgetting_few"),
        throughput_sps=_throughput(s, lambda: answer(ctx.sample), len(ctx.sample)),
    )


def _score_small(ctx: Context, m: Method) -> dict[str, float | None]:
    """A run's distilled small model answering alone."""
    s = ctx.systems[m.name]

    def answer(b: Batch) -> _Answer:
        return _Answer(s.small_proba(s.featurize(b)).argmax(axis=1))

    fg = ctx.reports[m.name].get("forgetting_small") or {}
    return ctx.row(
        answer(ctx.traffic),
        answer(ctx.balanced),
        bwt=fg.get("bwt"),
        forgetting_few=fg.get("forgetting_few"),
        throughput_sps=_throughput(s, lambda: answer(ctx.sample), len(ctx.sample)),
    )


SCORERS: dict[str, Callable[[Context, Method], dict[str, float | None]]] = {
    "system": _score_system,
    "router": _score_router,
    "large": _score_large,
    "baseline": _score_baseline,
    "small": _score_small,
}

# the order in which one seed's methods are scored (random draws from the kcm system's
# generator, so the order is part of the result)
SCORE_ORDER = (
    "kcm",
    "mcm",
    "kcm_no_hint",
    "kcm_no_distill",
    "large_only",
    "cascade",
    "oracle",
    "random",
    "small_only",
    "kd",
)


def _context(
    runs: dict[str, tuple[Path, KCMConfig]],
    reports: dict[str, dict[str, Any]],
    throughput_n: int,
    seed: int,
    budget: float,
) -> Context:
    wss = {k: Workspace(p) for k, (p, _c) in runs.items()}
    task = wss["kcm"].task()
    traffic, balanced = wss["kcm"].view("traffic", task), wss["kcm"].view("balanced", task)
    rows = np.random.default_rng(seed).permutation(len(traffic))[:throughput_n]
    ctx = Context(
        seed=seed,
        budget=budget,
        traffic=traffic,
        balanced=balanced,
        sample=traffic.subset(np.sort(rows), "throughput"),
        groups=wss["kcm"].groups(),
        systems={k: challenger(wss[k], c) for k, (_p, c) in runs.items()},
        reports=reports,
        workspaces=wss,
    )
    s = ctx.systems["kcm"]
    pt = s.predict(traffic)
    ctx.kcm_rate = pt.large_call_rate
    ctx.small_label = pt.small_proba.argmax(axis=1)
    ctx.large_t = s.predict(traffic, route="large", use_hint=False)
    ctx.hinted = s.predict(traffic, route="large")  # the large model's answers with the hint
    return ctx


def score_methods(
    runs: dict[str, tuple[Path, KCMConfig]],
    reports: dict[str, dict[str, Any]],
    throughput_n: int,
    seed: int,
    budget: float = 0.3,
) -> tuple[dict[str, dict[str, float | None]], dict[str, Any]]:
    """Every method's metrics for one seed, from the runs' final states."""
    ctx = _context(runs, reports, throughput_n, seed, budget)
    table = {m.name: m for m in METHODS_TABLE}
    out = {name: SCORERS[table[name].answers](ctx, table[name]) for name in SCORE_ORDER}
    return out, {"curves": ctx.curves, "kcm_rate": ctx.kcm_rate}


def _aggregate(per_seed: list[dict[str, dict[str, float | None]]]) -> list[dict[str, Any]]:
    rows = []
    for m in METHODS:
        row: dict[str, Any] = {"method": m}
        for k in METRICS:
            vals = [s[m].get(k) for s in per_seed if s[m].get(k) is not None]
            row[k] = (
                {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
                if vals
                else {"mean": None, "std": None}
            )
        rows.append(row)
    return rows


def run_bench(
    cfg: KCMConfig,
    seeds: Sequence[int],
    out: str | Path,
    throughput_n: int = 1000,
    progress: Callable[[str], None] | None = None,
    keep_runs: bool = False,
    budget: float = 0.3,
) -> dict[str, Any]:
    """Run every method for every seed; write ``bench.json``, ``BENCH.md`` and plots.
    ``budget``: the large-call rate at which every router is also scored."""
    check_budget(budget)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "runs"
    per_seed, extras = [], []
    t0 = time.perf_counter()
    for seed in seeds:
        runs, reports = {}, {}
        cache: Path | None = None
        for name, overrides in RUNS.items():
            if progress:
                progress(f"seed {seed}: {name}")
            c = with_overrides(cfg, [*QUIET, f"seed={seed}", *overrides])
            root = work / f"seed{seed}" / name
            shutil.rmtree(root, ignore_errors=True)
            reports[name] = _run(c, root, cache)
            runs[name] = (root, c)
            cache = cache or (root / "state" / "large_cache.sqlite")
        if progress:
            progress(f"seed {seed}: scoring")
        scores, extra = score_methods(runs, reports, throughput_n, seed, budget)
        per_seed.append(scores)
        extras.append(extra)
        log.info("seed %d done after %.0fs", seed, time.perf_counter() - t0)
    result = {
        "dataset": cfg.data.dataset,
        "machine": machine(),
        "date": datetime.now(UTC).date().isoformat(),
        "seeds": list(seeds),
        "config": config_to_dict(cfg),
        "seconds": time.perf_counter() - t0,
        "budget": budget,
        "rows": _aggregate(per_seed),
        "per_seed": [{"seed": s, "methods": p} for s, p in zip(seeds, per_seed, strict=True)],
        "kcm_rate": [e["kcm_rate"] for e in extras],
    }
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "BENCH.md").write_text(render_markdown(result))
    from kcm.evaluation.plots import plot_tradeoff

    plot_tradeoff(
        extras[0]["curves"],
        out / "tradeoff.png",
        title=f"{cfg.data.dataset}, seed {seeds[0]}: accuracy vs large-call rate (traffic)",
    )
    if not keep_runs:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _cell(v: dict[str, Any], pct: bool = True) -> str:
    if v["mean"] is None:
        return "–"
    if pct:
        return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"
    return f"{v['mean']:.0f} ± {v['std']:.0f}"


def render_markdown(result: dict[str, Any]) -> str:
    cols = [
        ("accuracy", "acc (traffic)", True),
        ("large_call_rate", "large rate", True),
        ("accuracy_at_kcm_rate", "acc @ kcm rate", True),
        ("accuracy_at_budget", "acc @ budget", True),
        ("accuracy_balanced", "acc (balanced)", True),
        ("accuracy_many", "Many", True),
        ("accuracy_medium", "Medium", True),
        ("accuracy_few", "Few", True),
        ("bwt", "BWT", True),
        ("forgetting_few", "forgetting Few", True),
        ("judge_auroc", "AUROC", True),
        ("apgr", "APGR", True),
        ("throughput_sps", "samples/s", False),
        ("throughput_at_budget_sps", "samples/s @ budget", False),
    ]
    lines = [
        f"# kcm bench: {result['dataset']}",
        "",
        f"seeds {result['seeds']}, {result['date']}, {result['machine']}; "
        f"{result['seconds'] / 60:.1f} min. Figures in % (mean ± std over seeds), except "
        "samples/s.",
        "",
        "| method | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | " + " | ".join(_cell(row[k], p) for k, _, p in cols) + " |"
        )
    lines += [
        "",
        "traffic: the test set in the stream's long-tailed proportions; balanced: the whole test "
        "set. `acc @ kcm rate`: each router calibrated to the large-call rate `kcm` reaches at "
        "its ε. `acc @ budget`: each router calibrated to send "
        f"{100 * result.get('budget', 0.3):.0f}% of the traffic to the large model. "
        "AUROC: the routing score at telling when the small model is wrong. APGR: area "
        "under the accuracy-vs-rate curve, small-only = 0, large-only = 1.",
    ]
    return "\n".join(lines) + "\n"
