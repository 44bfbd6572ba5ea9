"""Prequential stream metrics: every stream sample is answered before it is learned, and the
answers actually delivered are scored (the view online-distillation papers report).

``StreamMetrics`` is updated once per cycle with what was delivered and what it cost, in the
``update / result / reset`` style of the other metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rss_mb() -> float:
    """Resident memory of this process now (MiB; 0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return 0.0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class StreamMetrics:
    """Delivered accuracy and large-model share over a stream, with per-cycle curves.

    ``late``: how the late part of the stream is defined: a float in (0, 1) is the last share
    of the cycles (0.25: the last quarter), an int the last that many samples (OCaTS: 1000).
    """

    def __init__(self, late: float | int = 0.25) -> None:
        self.late = late
        self.reset()

    def reset(self) -> None:
        self.right_: list[np.ndarray] = []
        self.called_: list[np.ndarray] = []
        self.cycles_: list[dict[str, float | None]] = []
        self.cost_: list[float] = []  # what the batch's calls cost
        self.full_cost_: list[float] = []  # what sending the whole batch would have cost

    def update(
        self,
        answer: np.ndarray,
        gold: np.ndarray,
        called: np.ndarray,
        learn_seconds: float | None = None,
        serve_seconds: float | None = None,
        rss: float | None = None,
        prices: np.ndarray | None = None,
    ) -> None:
        """One batch; ``prices``: what one call about each of its queries costs (the bench
        prices the calls made, whatever any answer store holds)."""
        answer, gold, called = np.asarray(answer), np.asarray(gold), np.asarray(called, bool)
        if prices is not None:
            self.cost_.append(float(np.asarray(prices)[called].sum()))
            self.full_cost_.append(float(np.sum(prices)))
        known = gold >= 0
        right = np.where(known, answer == gold, np.nan)
        self.right_.append(right)
        self.called_.append(called)
        n = len(answer)
        self.cycles_.append(
            {
                "n": n,
                "large_call_rate": float(called.mean()) if n else 0.0,
                "accuracy": float(np.nanmean(right)) if known.any() else None,
                "learn_seconds": learn_seconds,
                "serve_ms_per_sample": None
                if serve_seconds is None or n == 0
                else 1000.0 * serve_seconds / n,
                "rss_mb": rss,
            }
        )

    def update_counts(
        self,
        n: int,
        n_right: int,
        n_known: int,
        calls: int,
        learn_seconds: float | None = None,
        serve_seconds: float | None = None,
        rss: float | None = None,
    ) -> None:
        """A cycle known only by its counts (a workspace cycle's prequential row). Exact for
        every figure this object reports while ``late`` is a share of the cycles."""
        answer = np.zeros(n, np.int64)
        gold = np.full(n, -1, np.int64)
        gold[:n_known] = 1
        answer[:n_right] = 1
        called = np.zeros(n, bool)
        called[:calls] = True
        self.update(answer, gold, called, learn_seconds, serve_seconds, rss)

    def _late_mask(self) -> np.ndarray:
        sizes = [len(c) for c in self.called_]
        total = sum(sizes)
        mask = np.zeros(total, bool)
        if isinstance(self.late, int):
            mask[max(total - self.late, 0) :] = True
            return mask
        k = len(sizes)
        first = k - max(1, round(k * float(self.late)))
        mask[sum(sizes[:first]) :] = True
        return mask

    def result(self) -> dict[str, Any]:
        if not self.called_:
            return {"stream_accuracy": None, "stream_large_share": None, "late_large_share": None}
        right = np.concatenate(self.right_)
        called = np.concatenate(self.called_)
        late = self._late_mask()
        cum_calls = np.cumsum([int(c.sum()) for c in self.called_])
        cum_right = np.cumsum([float(np.nansum(r)) for r in self.right_])
        cum_n = np.cumsum([int(np.isfinite(r).sum()) for r in self.right_])
        curves = {k: [c[k] for c in self.cycles_] for k in self.cycles_[0]}
        curves["cumulative_calls"] = [int(v) for v in cum_calls]
        curves["cumulative_accuracy"] = [
            float(r / n) if n else None for r, n in zip(cum_right, cum_n, strict=True)
        ]
        return {
            "stream_accuracy": float(np.nanmean(right)) if np.isfinite(right).any() else None,
            "stream_large_share": float(called.mean()),
            "late_large_share": float(called[late].mean()) if late.any() else None,
            "stream_calls": int(called.sum()),
            "stream_n": len(called),
            "curves": curves,
            **self._money(len(called)),
        }

    def _money(self, n: int) -> dict[str, float]:
        if not self.cost_:
            return {}
        spent, full = float(sum(self.cost_)), float(sum(self.full_cost_))
        return {
            "stream_cost": spent,
            "cost_per_1k": 1000.0 * spent / n if n else 0.0,
            "saved": full - spent,
            "price_per_call": full / n if n else 0.0,
        }


def auroc(right: np.ndarray, score: np.ndarray) -> float | None:
    """P(score of a right answer > score of a wrong one), ties counting half (Mann-Whitney);
    None when the answers are all right or all wrong."""
    right = np.asarray(right, bool)
    n_pos, n_neg = int(right.sum()), int((~right).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.asarray(score, np.float64))
    return float((ranks[right].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def margin_of(proba: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row."""
    top = np.sort(np.asarray(proba, np.float64), axis=1)
    return top[:, -1] - (top[:, -2] if top.shape[1] > 1 else 0.0)


class RankingAUROC:
    """How well each routing score ranks the small model's right answers above its wrong ones,
    per batch (AUROC against the gold labels, the small model's answer on every sample): the
    judge's C_x against the small model's own max-softmax and margin on the same student."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.per_batch_: dict[str, list[float]] = {}

    def update(self, small_proba: np.ndarray, gold: np.ndarray, **scores: np.ndarray) -> None:
        known = np.asarray(gold) >= 0
        if not known.any():
            return
        p = np.asarray(small_proba)[known]
        right = p.argmax(axis=1) == np.asarray(gold)[known]
        every = {"max_softmax": p.max(axis=1), "margin": margin_of(p)}
        every.update({k: np.asarray(v)[known] for k, v in scores.items()})
        for name, score in every.items():
            a = auroc(right, score)
            if a is not None:
                self.per_batch_.setdefault(name, []).append(a)

    def result(self) -> dict[str, float]:
        """Mean per-batch AUROC of each score."""
        return {f"auroc_{k}": float(np.mean(v)) for k, v in self.per_batch_.items() if v}


def phi(accuracy: float, share: float, lam: float) -> float:
    """OCaTS's discounted accuracy φ = accuracy − λ · calls / N."""
    return accuracy - lam * share


def envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper envelope of (share, accuracy) operating points: accuracy rises with share."""
    env: list[tuple[float, float]] = []
    for s, a in sorted(points):
        if not env or a > env[-1][1]:
            env.append((s, a))
    return env


def calls_to_reach(points: list[tuple[float, float]], target: float, n: int) -> float | None:
    """The fewest calls (share × n) with which an operating-point sweep reaches accuracy
    ``target``, interpolating linearly along the envelope; None when no point reaches it."""
    env = envelope(points)
    for i, (s, a) in enumerate(env):
        if a >= target:
            if i == 0:
                return s * n
            s0, a0 = env[i - 1]
            return (s0 + (target - a0) * (s - s0) / (a - a0)) * n
    return None


def accuracy_at_share(points: list[tuple[float, float]], share: float) -> float | None:
    """The best accuracy an operating-point sweep reaches with at most ``share`` of calls,
    interpolating between the two envelope points around it; None below the cheapest point."""
    env = envelope(points)
    below = [p for p in env if p[0] <= share + 1e-12]
    if not below:
        return None
    s0, a0 = below[-1]
    above = [p for p in env if p[0] > share + 1e-12]
    if not above:
        return a0
    s1, a1 = above[0]
    return a0 + (a1 - a0) * (share - s0) / (s1 - s0)
