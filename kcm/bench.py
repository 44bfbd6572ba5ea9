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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kcm.config import KCMConfig, _set_dotted, config_from_dict, config_to_dict, parse_override
from kcm.data.batch import Batch
from kcm.errors import ConfigError
from kcm.evaluation.curves import area_under, tradeoff_curve
from kcm.evaluation.metrics import auroc
from kcm.evaluation.report import view_metrics

log = logging.getLogger(__name__)

METHODS = (
    "large_only",
    "small_only",
    "kd",
    "cascade",
    "random",
    "oracle",
    "mcm",
    "kcm",
    "kcm_no_hint",
    "kcm_no_distill",
)
ROUTERS = ("cascade", "random", "oracle", "mcm", "kcm", "kcm_no_hint", "kcm_no_distill")
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
RUNS: dict[str, list[str]] = {
    "kcm": [],
    "mcm": ["judge.kind=mlp"],
    "kcm_no_hint": ["large.hint=false"],
    "kcm_no_distill": ["distill.enabled=false"],
    "kd": ["routing.epsilon=1.0"],  # C_x > 1 never holds: everything goes large and is distilled
}
QUIET = ["registry.enabled=false", "dvc.enabled=false", "eval.plots=false"]


def variant(cfg: KCMConfig, overrides: Sequence[str]) -> KCMConfig:
    tree = config_to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return config_from_dict(tree, "bench")


def apgr(curve: dict[str, list[float]]) -> float | None:
    """Average performance gap recovered (RouteLLM): the area under the accuracy-vs-rate curve
    with accuracy normalised so that the small model alone is 0 and the large model alone 1."""
    acc = np.asarray(curve["accuracy"], float)
    if len(acc) < 2 or abs(acc[-1] - acc[0]) < 1e-12:
        return None
    pgr = (acc - acc[0]) / (acc[-1] - acc[0])
    return area_under({"rate": curve["rate"], "accuracy": pgr.tolist()})


def _run(cfg: KCMConfig, root: Path, share_cache_from: Path | None) -> dict[str, Any]:
    """One continual run in ``root`` (the large model's answer/embedding cache is copied from
    an earlier run of the same seed: the same inputs are never encoded twice)."""
    from kcm import pipeline
    from kcm.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="kcm-bench-inbox-") as inbox:
        ws = Workspace(root, inbox)
        if share_cache_from is not None and share_cache_from.is_file():
            ws.state.mkdir(parents=True, exist_ok=True)
            shutil.copy(share_cache_from, ws.state / share_cache_from.name)
        pipeline.feed(cfg, inbox)
        return pipeline.run_pipeline(cfg, ws)


def _fresh_cache(system: Any) -> None:
    """Throughput is measured without the answer cache (a new, empty in-memory one)."""
    from kcm.models.cache import ResponseCache

    if system.large is not None:
        system.large.cache = ResponseCache()


def _throughput(system: Any, fn: Callable[[], Any], n: int) -> float:
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


def _few_groups(meta: dict[str, Any]) -> dict[int, str]:
    return {int(k): v for k, v in meta["groups"].items()}


def _score_methods(
    runs: dict[str, Path],
    reports: dict[str, dict[str, Any]],
    throughput_n: int,
    seed: int,
    budget: float = 0.3,
) -> tuple[dict[str, dict[str, float | None]], dict[str, Any]]:
    """Every method's metrics for one seed, from the runs' final states."""
    from kcm import pipeline
    from kcm.workspace import Workspace

    ws = {k: Workspace(p) for k, p in runs.items()}
    task = pipeline.task_of(ws["kcm"])
    groups = _few_groups(pipeline.eval_meta(ws["kcm"]))
    traffic = pipeline._view(ws["kcm"], "traffic", task)
    balanced = pipeline._view(ws["kcm"], "balanced", task)
    rows = np.random.default_rng(seed).permutation(len(traffic))[:throughput_n]
    sample: Batch = traffic.subset(np.sort(rows), "throughput")
    latest = {k: pipeline.current_system(w) for k, w in ws.items()}
    out: dict[str, dict[str, float | None]] = {}
    curves: dict[str, Any] = {}
    y_t, y_b = traffic.y_true, balanced.y_true

    def acc(label: np.ndarray, y: np.ndarray) -> float:
        return float((label == y).mean())

    def row(pt: Any, pb: Any, **extra: Any) -> dict[str, float | None]:
        mt = view_metrics(pt.label, y_t, pt.to_large, groups)
        mb = view_metrics(pb.label, y_b, pb.to_large, groups)
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

    # the full systems: each run's latest learned version (what `kcm run` reports as "system")
    kcm_rate = None
    for name in ("kcm", "mcm", "kcm_no_hint", "kcm_no_distill"):
        s = latest[name]
        pt, pb = s.predict(traffic), s.predict(balanced)
        small_label = pt.small_proba.argmax(axis=1)
        large_t = s.predict(traffic, route="large", use_hint=False).label
        curve = tradeoff_curve(pt.confidence, small_label, large_t, y_t)
        curves[name] = curve
        if name == "kcm":
            kcm_rate = pt.large_call_rate
        at = s.predict(traffic, target_rate=kcm_rate)
        at_budget = s.predict(traffic, target_rate=budget)
        fg = reports[name]["forgetting"]
        out[name] = row(
            pt,
            pb,
            accuracy_at_kcm_rate=acc(at.label, y_t),
            accuracy_at_budget=acc(at_budget.label, y_t),
            judge_auroc=auroc(pt.confidence, small_label == y_t),
            apgr=apgr(curve),
            bwt=fg.get("bwt"),
            forgetting_few=fg.get("forgetting_few"),
            throughput_sps=_throughput(s, lambda s=s: s.predict(sample), len(sample)),
            throughput_at_budget_sps=_throughput(
                s, lambda s=s: s.predict(sample, target_rate=budget), len(sample)
            ),
        )
    assert kcm_rate is not None
    s = latest["kcm"]
    pt_k = s.predict(traffic)
    small_label = pt_k.small_proba.argmax(axis=1)
    large_t = s.predict(traffic, route="large", use_hint=False)
    large_b = s.predict(balanced, route="large", use_hint=False)
    out["large_only"] = row(
        large_t,
        large_b,
        throughput_sps=_throughput(
            s, lambda: s.predict(sample, route="large", use_hint=False), len(sample)
        ),
    )
    hinted = s.predict(traffic, route="large")  # the large model's answers with the hint
    eps = s.cfg.routing.epsilon
    for name, route, score in (
        ("cascade", "cascade", pt_k.small_proba.max(axis=1)),
        ("oracle", "oracle", (small_label == y_t).astype(float)),
    ):
        pt = s.predict(traffic, route=route, epsilon=eps)
        pb = s.predict(balanced, route=route, epsilon=eps)
        if route == "oracle":  # the ceiling at a rate
            at, at_budget = (
                _ceiling(small_label, hinted.label, y_t, kcm_rate),
                _ceiling(small_label, hinted.label, y_t, budget),
            )
        else:
            at = s.predict(traffic, route=route, target_rate=kcm_rate)
            at_budget = s.predict(traffic, route=route, target_rate=budget)
        curve = tradeoff_curve(score, small_label, large_t.label, y_t)
        curves[name] = curve
        extra: dict[str, float | None] = {}
        if route == "cascade":  # the oracle has no serving path at a budget
            extra["throughput_at_budget_sps"] = _throughput(
                s, lambda: s.predict(sample, route="cascade", target_rate=budget), len(sample)
            )
        out[name] = row(
            pt,
            pb,
            accuracy_at_kcm_rate=acc(at.label, y_t),
            accuracy_at_budget=acc(at_budget.label, y_t),
            judge_auroc=auroc(score, small_label == y_t),
            apgr=apgr(curve),
            throughput_sps=_throughput(
                s, lambda route=route: s.predict(sample, route=route, epsilon=eps), len(sample)
            ),
            **extra,
        )
    pt = s.predict(traffic, route="random", target_rate=kcm_rate)
    pb = s.predict(balanced, route="random", target_rate=kcm_rate)
    score = np.random.default_rng(seed + 1).random(len(traffic))
    curves["random"] = tradeoff_curve(score, small_label, large_t.label, y_t)
    at_budget = s.predict(traffic, route="random", target_rate=budget)
    out["random"] = row(
        pt,
        pb,
        accuracy_at_kcm_rate=acc(pt.label, y_t),
        accuracy_at_budget=acc(at_budget.label, y_t),
        judge_auroc=auroc(score, small_label == y_t),
        apgr=apgr(curves["random"]),
        throughput_sps=_throughput(
            s, lambda: s.predict(sample, route="random", target_rate=kcm_rate), len(sample)
        ),
    )
    # small models answering alone
    version = int(ws["kcm"].load_ledger()["current"])
    baseline = pipeline._load_baseline(ws["kcm"], s, version)

    def small_only(b: Batch) -> Any:
        return _Answer(baseline.predict(s.featurize(b).small))

    out["small_only"] = row(
        small_only(traffic),
        small_only(balanced),
        bwt=reports["kcm"]["forgetting_small_only"].get("bwt"),
        forgetting_few=reports["kcm"]["forgetting_small_only"].get("forgetting_few"),
        throughput_sps=_throughput(s, lambda: small_only(sample), len(sample)),
    )
    kd = latest["kd"]

    def kd_answer(b: Batch) -> Any:
        return _Answer(kd.small_proba(kd.featurize(b)).argmax(axis=1))

    fg = reports["kd"].get("forgetting_small") or {}
    out["kd"] = row(
        kd_answer(traffic),
        kd_answer(balanced),
        bwt=fg.get("bwt"),
        forgetting_few=fg.get("forgetting_few"),
        throughput_sps=_throughput(kd, lambda: kd_answer(sample), len(sample)),
    )
    return out, {"curves": curves, "kcm_rate": kcm_rate}


def _ceiling(small: np.ndarray, large: np.ndarray, y: np.ndarray, rate: float) -> _Answer:
    """The best any router can do with at most round(rate·n) large-model calls: calls go only
    to samples the small model gets wrong and the large model gets right."""
    useful = np.flatnonzero((small != y) & (large == y))[: round(rate * len(y))]
    label = small.copy()
    label[useful] = large[useful]
    return _Answer(label)


class _Answer:
    """A small model's answers in the shape ``view_metrics`` reads."""

    def __init__(self, label: np.ndarray) -> None:
        self.label = np.asarray(label)
        self.to_large = np.zeros(len(self.label), dtype=bool)


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
    if not 0.0 <= budget <= 1.0:
        raise ConfigError(f"--budget {budget}: give a large-call rate in [0, 1], e.g. 0.3")
    from kcm.runner import machine

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
            c = variant(cfg, [*QUIET, f"seed={seed}", *overrides])
            root = work / f"seed{seed}" / name
            shutil.rmtree(root, ignore_errors=True)
            reports[name] = _run(c, root, cache)
            runs[name] = root
            cache = cache or (root / "state" / "large_cache.sqlite")
        if progress:
            progress(f"seed {seed}: scoring")
        scores, extra = _score_methods(runs, reports, throughput_n, seed, budget)
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
