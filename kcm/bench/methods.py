"""The bench's methods as a table: each row says which continual run answers, how it answers
and whether it has a routing score; a scorer per way of answering turns a run's final state
into the row's metrics. Adding a method is adding a row (and, for a new way of answering, a
scorer)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kcm import routing
from kcm.bench.online import OnlineStream
from kcm.bench.streams import (
    STREAM_METRICS,
    from_cycles,
    peer_row,
    stream_target,
    system_row,
    workspace_stream,
)
from kcm.config import KCMConfig
from kcm.data.batch import Batch
from kcm.evaluation.curves import apgr, ceiling, tradeoff_curve
from kcm.evaluation.metrics import auroc
from kcm.evaluation.report import view_metrics
from kcm.steps import load_baseline
from kcm.steps.systems import challenger
from kcm.system import CollaborationSystem
from kcm.workspace import Workspace

log = logging.getLogger(__name__)

Answers = Literal["system", "router", "large", "baseline", "small", "peer"]
#: the KAN judge's parameter count with the default judge ([40, 16, 2], G=5, k=3) is 6,738;
#: an MLP [40, 160, 2] has 6,882: the ``mcm_matched`` row isolates KAN vs MLP at equal size
MATCHED_MLP_HIDDEN = 160


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
    # kcm with an accuracy budget instead of ε (routing.max_loss: the long-stream setting)
    Method("kcm_max_loss", ("routing.max_loss=0.02",), "system", scored=True),
    # the same, learning only what the large model said (no self-training on its own answers)
    Method(
        "kcm_teacher_only",
        ("routing.max_loss=0.02", "distill.w_js=0", "distill.temperature=1"),
        "system",
        scored=True,
    ),
    # a logistic regression on the small model's confidence, margin and entropy
    Method("learned_router", ("judge.kind=logreg",), "system", scored=True),
    Method(
        "mcm_matched",
        ("judge.kind=mlp", f"judge.hidden={MATCHED_MLP_HIDDEN}"),
        "system",
        scored=True,
    ),
    # the published online-distillation policies (kcm.peers), on the kcm run's stream
    Method("nc_margin", None, "peer"),
    Method("nc_entropy", None, "peer"),
    Method("nc_qbc", None, "peer"),
    Method("ocats", None, "peer"),
    Method("online_cascade", None, "peer"),
)
METHODS = tuple(m.name for m in METHODS_TABLE)
ROUTERS = tuple(m.name for m in METHODS_TABLE if m.scored)
RUNS: dict[str, list[str]] = {
    m.name: list(m.overrides)
    for m in sorted(METHODS_TABLE, key=lambda m: m.name != "kcm")
    if m.overrides is not None
}
METRICS = (
    *STREAM_METRICS,
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

    def __init__(self, answer: np.ndarray) -> None:
        self.answer = np.asarray(answer)
        self.to_large = np.zeros(len(self.answer), dtype=bool)


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
    small_proba: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    small_label: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    large_t: Any = None  # the kcm run's large model on traffic, without the hint
    hinted: Any = None  # the same with the hint
    stream: OnlineStream | None = None  # the kcm run's stream, for the peers
    stream_share: float = 0.0  # kcm's share of large calls on it
    stream_target: float | None = None  # the large model's stream accuracy less one point
    extras: dict[str, Any] = field(default_factory=dict)  # peers' sweeps and curves

    def row(self, pt: Any, pb: Any, **extra: Any) -> dict[str, float | None]:
        mt = view_metrics(pt.answer, self.traffic.gold, pt.to_large, self.groups)
        mb = view_metrics(pb.answer, self.balanced.gold, pb.to_large, self.groups)
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

    def acc(self, answer: np.ndarray) -> float:
        return float((answer == self.traffic.gold).mean())


def _score_system(ctx: Context, m: Method) -> dict[str, float | None]:
    """A full system (its own run): at its ε, at kcm's rate and at the budget."""
    s, gold_t = ctx.systems[m.name], ctx.traffic.gold
    pt, pb = s.predict(ctx.traffic), s.predict(ctx.balanced)
    small_label = pt.small_proba.argmax(axis=1)
    large_t = s.predict(ctx.traffic, route="large", use_hint=False).answer
    curve = ctx.curves[m.name] = tradeoff_curve(pt.confidence, small_label, large_t, gold_t)
    fg = ctx.reports[m.name]["forgetting"]
    return ctx.row(
        pt,
        pb,
        accuracy_at_kcm_rate=ctx.acc(s.predict(ctx.traffic, target_rate=ctx.kcm_rate).answer),
        accuracy_at_budget=ctx.acc(s.predict(ctx.traffic, target_rate=ctx.budget).answer),
        judge_auroc=auroc(pt.confidence, small_label == gold_t),
        apgr=apgr(curve),
        bwt=fg.get("bwt"),
        forgetting_few=fg.get("forgetting_few"),
        throughput_sps=_throughput(s, lambda: s.predict(ctx.sample), len(ctx.sample)),
        throughput_at_budget_sps=_throughput(
            s, lambda: s.predict(ctx.sample, target_rate=ctx.budget), len(ctx.sample)
        ),
    )


def _router_score(ctx: Context, m: Method) -> np.ndarray:
    """The routing score on traffic for the trade-off curve (random: a fixed seeded draw)."""
    rng = np.random.default_rng(ctx.seed + 1)
    return routing.score(m.route, ctx.small_proba, gold=ctx.traffic.gold, rng=rng)


def _score_router(ctx: Context, m: Method) -> dict[str, float | None]:
    """Another routing score over the kcm run's small and large models. ``random`` is scored
    at kcm's rate; the oracle at a rate is the true ceiling (``ceiling``)."""
    s, gold_t, sample = ctx.systems["kcm"], ctx.traffic.gold, ctx.sample
    at_eps: dict[str, Any] = (
        {"target_rate": ctx.kcm_rate}
        if m.route == "random"
        else {"epsilon": s.settings.routing.epsilon}
    )
    pt = s.predict(ctx.traffic, route=m.route, **at_eps)
    pb = s.predict(ctx.balanced, route=m.route, **at_eps)
    if m.route == "oracle":
        at = ceiling(ctx.small_label, ctx.hinted.answer, gold_t, ctx.kcm_rate)
        at_budget = ceiling(ctx.small_label, ctx.hinted.answer, gold_t, ctx.budget)
    else:
        at = (
            pt.answer
            if m.route == "random"
            else s.predict(ctx.traffic, route=m.route, target_rate=ctx.kcm_rate).answer
        )
        at_budget = s.predict(ctx.traffic, route=m.route, target_rate=ctx.budget).answer
    score = _router_score(ctx, m)
    curve = ctx.curves[m.name] = tradeoff_curve(score, ctx.small_label, ctx.large_t.answer, gold_t)
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
        judge_auroc=auroc(score, ctx.small_label == gold_t),
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

    return _alone(ctx, s, answer, ctx.reports["kcm"]["forgetting_small_only"])


def _score_small(ctx: Context, m: Method) -> dict[str, float | None]:
    """A run's distilled small model answering alone."""
    s = ctx.systems[m.name]

    def answer(b: Batch) -> _Answer:
        return _Answer(s.small_proba(s.featurize(b)).argmax(axis=1))

    return _alone(ctx, s, answer, ctx.reports[m.name].get("forgetting_small") or {})


def _alone(
    ctx: Context,
    s: CollaborationSystem,
    answer: Callable[[Batch], _Answer],
    forgetting: dict[str, Any],
) -> dict[str, float | None]:
    """The row of a small model answering everything alone."""
    return ctx.row(
        answer(ctx.traffic),
        answer(ctx.balanced),
        bwt=forgetting.get("bwt"),
        forgetting_few=forgetting.get("forgetting_few"),
        throughput_sps=_throughput(s, lambda: answer(ctx.sample), len(ctx.sample)),
    )


def _score_peer(ctx: Context, m: Method) -> dict[str, float | None]:
    """A peer policy on the kcm run's stream (it has no final held-out state to score)."""
    assert ctx.stream is not None
    row, extra = peer_row(m.name, ctx.stream, ctx.seed, ctx.stream_share, ctx.stream_target)
    ctx.extras[m.name] = extra
    return row


SCORERS: dict[str, Callable[[Context, Method], dict[str, float | None]]] = {
    "system": _score_system,
    "router": _score_router,
    "large": _score_large,
    "baseline": _score_baseline,
    "small": _score_small,
    "peer": _score_peer,
}


def _stream_fields(ctx: Context, m: Method) -> dict[str, Any]:
    """The stream figures of a method that ran the stream itself (its cycles' prequential
    rows), and of the large model answering every stream sample."""
    if m.answers in ("system", "small"):
        res = from_cycles(ctx.reports[m.name]["cycles"])
        ctx.extras[m.name] = {"curves": res["curves"]}
        return system_row(res, ctx.stream_target)
    if m.answers == "large" and ctx.stream_target is not None:
        acc = ctx.stream_target + 0.01
        return {"stream_accuracy": acc, "stream_large_share": 1.0, "late_large_share": 1.0}
    return {}


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
    ctx.small_proba = pt.small_proba
    ctx.small_label = pt.small_proba.argmax(axis=1)
    ctx.large_t = s.predict(traffic, route="large", use_hint=False)
    ctx.hinted = s.predict(traffic, route="large")  # the large model's answers with the hint
    ctx.stream = workspace_stream(wss["kcm"], runs["kcm"][1])
    ctx.stream_target = stream_target(ctx.stream.teacher, ctx.stream.batches)
    ctx.stream_share = from_cycles(reports["kcm"]["cycles"])["stream_large_share"]
    return ctx


def score_methods(
    runs: dict[str, tuple[Path, KCMConfig]],
    reports: dict[str, dict[str, Any]],
    throughput_n: int,
    seed: int,
    budget: float = 0.3,
    methods: tuple[str, ...] | None = None,
) -> tuple[dict[str, dict[str, float | None]], dict[str, Any]]:
    """Every method's metrics (or those in ``methods``) for one seed, from the runs' final
    states and their streams."""
    ctx = _context(runs, reports, throughput_n, seed, budget)
    chosen = [m for m in METHODS_TABLE if methods is None or m.name in methods]
    # (only ``random`` draws from the kcm system's generator, so the order changes no figure)
    out = {m.name: {**SCORERS[m.answers](ctx, m), **_stream_fields(ctx, m)} for m in chosen}
    extra = {"curves": ctx.curves, "kcm_rate": ctx.kcm_rate, "stream": ctx.extras}
    if ctx.stream_target is not None:
        extra["large_stream_accuracy"] = ctx.stream_target + 0.01
    return out, extra
