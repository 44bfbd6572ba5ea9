"""The stream figures of ``kcm bench``: every method's delivered (prequential) accuracy and
share of large-model calls on the same stream, compared at equal cumulative calls.

A kcm system has one operating point (its ε); a peer is swept over its operating points
(``kcm.peers.PEERS``) and is credited with the best of them in hindsight: its accuracy at
kcm's share is read off the upper envelope of its sweep, its calls to come within a point of
the large model likewise, and φ = accuracy − λ·share is its best point's. Neural-caching
peers are also run with a fixed budget equal to kcm's calls (their paper's protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kcm.answers import teacher_labels
from kcm.bench.online import OnlineStream, run_policy
from kcm.config import KCMConfig
from kcm.evaluation.stream import StreamMetrics, accuracy_at_share, calls_to_reach, phi
from kcm.peers import PEERS
from kcm.steps.systems import system_at
from kcm.workspace import Workspace

LAMBDAS = (0.05, 0.1, 0.2)
STREAM_METRICS = (
    "stream_accuracy",
    "stream_large_share",
    "late_large_share",
    "accuracy_at_kcm_share",
    "calls_to_match",
    "cost_per_1k",
    "saved",
    "cost_to_match",
    "learn_growth",
    *(f"phi_{lam}" for lam in LAMBDAS),
)


def from_cycles(cycles: list[dict[str, Any]], late: float = 0.25) -> dict[str, Any]:
    """Stream figures of a workspace run, from its cycles' prequential rows."""
    m = StreamMetrics(late=late)
    for c in cycles:
        n = int(c["n"])
        acc = c.get("accuracy")
        m.update_counts(
            n,
            0 if acc is None else round(acc * n),
            n if acc is not None else 0,
            int(c["large_calls"]),
            c.get("learn_seconds"),
            None,  # a workspace cycle's serving time is not separated from its other steps
            c.get("rss_mb"),
        )
    return m.result()


def learn_growth(curves: dict[str, list]) -> float | None:
    """Learn seconds per sample of the last cycle over those of cycle 5 (bounded cost: ≈ 1)."""
    s, n = curves.get("learn_seconds") or [], curves.get("n") or []
    if len(s) < 7 or s[5] is None or s[-1] is None or not s[5]:
        return None
    return (s[-1] / n[-1]) / (s[5] / n[5])


def system_row(result: dict[str, Any], target: float | None) -> dict[str, Any]:
    """The stream row of a method with one operating point."""
    acc, share = result["stream_accuracy"], result["stream_large_share"]
    row = {k: result.get(k) for k in ("stream_accuracy", "stream_large_share", "late_large_share")}
    row["learn_growth"] = learn_growth(result["curves"])
    for k in ("cost_per_1k", "saved"):
        if k in result:
            row[k] = result[k]
    if acc is not None:
        row.update({f"phi_{lam}": phi(acc, share, lam) for lam in LAMBDAS})
        if target is not None and acc >= target:
            row["calls_to_match"] = result["stream_calls"]
            if "stream_cost" in result:
                row["cost_to_match"] = result["stream_cost"]
    return row


def peer_row(
    name: str,
    stream: OnlineStream,
    seed: int,
    ref_share: float,
    target: float | None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A peer swept over its operating points; (its row, its points and curves)."""
    peer = PEERS[name]
    results = []
    for point in peer.sweep:
        if progress:
            progress(f"seed {seed}: {name} {point}")
        results.append((point, run_policy(peer.make(**point), stream, seed).result()))
    point, chosen = nearest(results, ref_share)
    extra = []
    if peer.budgeted:
        # neural caching's own protocol: a fixed budget of kcm's calls, its nearest threshold
        chosen = run_policy(peer.make(**point, budget=ref_share), stream, seed).result()
        extra.append(chosen)
    return sweep_row([r for _, r in results] + extra, chosen, ref_share, target, stream.n)


def nearest(results: list[tuple[Any, dict[str, Any]]], share: float) -> tuple[Any, dict]:
    """The operating point whose large share is nearest ``share``."""
    return min(results, key=lambda pr: abs(pr[1]["stream_large_share"] - share))


def sweep_row(
    results: list[dict[str, Any]],
    chosen: dict[str, Any],
    ref_share: float,
    target: float | None,
    n: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row of a method swept over operating points (``results``), credited with the best
    of them in hindsight; ``chosen``: the point whose figures and curves are shown."""
    pts = [(r["stream_large_share"], r["stream_accuracy"]) for r in results]
    row = system_row(chosen, None)
    row["accuracy_at_kcm_share"] = accuracy_at_share(pts, ref_share)
    row["calls_to_match"] = None if target is None else calls_to_reach(pts, target, n)
    if row["calls_to_match"] is not None and "price_per_call" in chosen:  # at the mean price
        row["cost_to_match"] = row["calls_to_match"] * chosen["price_per_call"]
    row.update({f"phi_{lam}": max(phi(a, s, lam) for s, a in pts) for lam in LAMBDAS})
    return row, {"points": [[s, a] for s, a in pts], "curves": chosen["curves"]}


def stream_target(teacher: list[np.ndarray], batches: list[Any]) -> float:
    """The large model's own delivered accuracy on the stream, less one point."""
    gold = np.concatenate([b.gold for b in batches])
    right = np.concatenate(teacher) == gold
    return float(right[gold >= 0].mean()) - 0.01


def workspace_stream(ws: Workspace, cfg: KCMConfig) -> OnlineStream:
    """The stream a workspace run processed, as the peers see it: its batches in order, the
    cheap features of the run's featurizer (fitted on the pretraining split) and the large
    model's answers without a hint."""
    s0 = system_at(ws, cfg, 0)
    batches = [ws.load_batch(c["batch"]) for c in ws.load_ledger().cycles]
    return OnlineStream(
        batches=batches,
        features=[s0.featurize(b) for b in batches],
        teacher=[teacher_labels(s0.large, b) for b in batches],
        n_classes=s0.task.n_classes,
        prices=prices_of(s0.large, batches),
    )


def prices_of(large: Any, batches: list[Any]) -> list[np.ndarray] | None:
    """What one call (no hint) about each query of each batch costs (None: not priced)."""
    if large.price.free:
        return None
    return [np.array([large.expected_cost(x) for x in b.inputs]) for b in batches]
