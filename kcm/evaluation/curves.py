"""Curves behind the plots, as plain numbers (so DVC, MLflow and the benchmarks share them).

- ``tradeoff_curve``: accuracy against the large-call rate, sweeping the routing threshold
  (the samples with the lowest score go to the large model first), as RouteLLM draws it.
- ``group_tradeoff_curve``: the same sweep, scored on a subset (the Few classes) while the
  rate counts every sample, so two systems' tails can be compared at one large-call rate.
- ``apgr``: the area under a trade-off curve normalised between the small and the large model.
- ``ceiling``: the oracle router's answers at a large-call budget.
- ``reliability``: binned confidence against the observed frequency of the event it predicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RATES = np.linspace(0.0, 1.0, 21)


def tradeoff_curve(
    score: np.ndarray,
    small_label: np.ndarray,
    large_label: np.ndarray,
    gold: np.ndarray,
    rates: np.ndarray = RATES,
) -> dict[str, list[float]]:
    """Accuracy when the ``rate`` share of samples with the lowest ``score`` goes to the large
    model and the rest keep the small model's answer. Samples without a label are ignored."""
    everyone = np.ones(len(np.asarray(gold)), bool)
    return group_tradeoff_curve(score, small_label, large_label, gold, everyone, rates)


def group_tradeoff_curve(
    score: np.ndarray,
    small_label: np.ndarray,
    large_label: np.ndarray,
    gold: np.ndarray,
    in_group: np.ndarray,
    rates: np.ndarray = RATES,
) -> dict[str, list[float]]:
    """Like ``tradeoff_curve`` (the lowest-scored ``rate`` share of *all* labelled samples goes
    to the large model) but the accuracy is measured on the samples where ``in_group`` holds."""
    keep = np.asarray(gold) >= 0
    score, y = np.asarray(score, float)[keep], np.asarray(gold)[keep]
    grp = np.asarray(in_group, bool)[keep]
    n, n_grp = len(y), int(grp.sum())
    if n == 0 or n_grp == 0:
        return {"rate": [], "accuracy": []}
    small_ok = (np.asarray(small_label)[keep] == y) & grp
    large_ok = (np.asarray(large_label)[keep] == y) & grp
    order = np.argsort(score, kind="stable")  # least confident first
    # correct answers gained after sending the first m samples of `order` to the large model
    gain = np.concatenate([[0], np.cumsum(large_ok[order].astype(int) - small_ok[order])])
    base = int(small_ok.sum())
    acc = [(base + int(gain[round(float(r) * n)])) / n_grp for r in rates]
    return {"rate": [float(r) for r in rates], "accuracy": acc}


def value_at(curve: dict[str, list[float]], rate: float) -> float | None:
    """The curve's accuracy at ``rate``, linearly interpolated (None for an empty curve)."""
    if not curve.get("rate"):
        return None
    return float(np.interp(rate, curve["rate"], curve["accuracy"]))


def area_under(curve: dict[str, list[float]]) -> float | None:
    """Trapezoid area under an accuracy-vs-rate curve (rates from 0 to 1)."""
    if len(curve["rate"]) < 2:
        return None
    r = np.asarray(curve["rate"], float)
    a = np.asarray(curve["accuracy"], float)
    return float(np.sum((r[1:] - r[:-1]) * (a[1:] + a[:-1]) / 2))


def apgr(curve: dict[str, list[float]]) -> float | None:
    """Average performance gap recovered (RouteLLM): the area under the accuracy-vs-rate curve
    with accuracy normalised so that the small model alone is 0 and the large model alone 1."""
    acc = np.asarray(curve["accuracy"], float)
    if len(acc) < 2 or abs(acc[-1] - acc[0]) < 1e-12:
        return None
    pgr = (acc - acc[0]) / (acc[-1] - acc[0])
    return area_under({"rate": curve["rate"], "accuracy": pgr.tolist()})


def ceiling(small: np.ndarray, large: np.ndarray, gold: np.ndarray, rate: float) -> np.ndarray:
    """The answers of the best any router can do with at most round(rate·n) large-model calls:
    calls go only to samples the small model gets wrong and the large model gets right."""
    useful = np.flatnonzero((small != gold) & (large == gold))[: round(rate * len(gold))]
    label = np.array(small, copy=True)
    label[useful] = large[useful]
    return label


def reliability(
    confidence: np.ndarray, event: np.ndarray, bins: int = 10, strategy: str = "quantile"
) -> dict[str, Any]:
    """Per confidence bin: mean confidence, observed frequency of ``event`` and count; the
    expected calibration error (ECE) over those bins; and a 40-bin histogram of the confidences.
    ``strategy``: ``quantile`` (bins of equal count: a judge's scores crowd near 1, and
    equal-width bins put nearly all of them in the last one) or ``uniform``. The histogram
    spans the scores' own range (from their 1st percentile)."""
    if strategy not in ("quantile", "uniform"):
        raise ValueError(f"strategy={strategy!r}: choose 'quantile' or 'uniform'")
    c = np.clip(np.asarray(confidence, float), 0.0, 1.0)
    e = np.asarray(event, bool)
    if strategy == "quantile" and len(c):
        edges = np.unique(np.quantile(c, np.linspace(0, 1, bins + 1)))
    else:
        edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], c, side="right"), 0, max(len(edges) - 2, 0))
    conf, freq, count = [], [], []
    ece = 0.0
    for b in range(max(len(edges) - 1, 1)):
        m = idx == b
        k = int(m.sum())
        count.append(k)
        if k:
            conf.append(float(c[m].mean()))
            freq.append(float(e[m].mean()))
            ece += k / max(len(c), 1) * abs(conf[-1] - freq[-1])
        else:
            conf.append(None)
            freq.append(None)
    # the histogram spans where the scores are; a judge whose scores crowd near 1 (median above
    # 0.9) is drawn on a logit scale, with bins of equal width on it, so the crowd spreads out
    hist, hist_edges, scale = _histogram(c)
    return {
        "bins": len(count),
        "strategy": strategy,
        "edges": [float(x) for x in edges],
        "confidence": conf,
        "frequency": freq,
        "count": count,
        "ece": ece,
        "hist": hist.tolist(),
        "hist_edges": [float(x) for x in hist_edges],
        "scale": scale,
    }


def _histogram(c: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray, str]:
    if not len(c):
        return np.zeros(bins, int), np.linspace(0, 1, bins + 1), "linear"
    if np.median(c) <= 0.9:
        lo = float(np.floor(np.quantile(c, 0.01) * 20) / 20)
        hist, edges = np.histogram(c, bins=bins, range=(min(lo, 0.95), 1.0))
        return hist, edges, "linear"
    eps = 1e-4
    lo = float(np.clip(np.quantile(c, 0.01), eps, 0.5))
    hi = float(np.clip(c.max(), 0.99, 1 - eps))
    z = np.linspace(np.log(lo / (1 - lo)), np.log(hi / (1 - hi)), bins + 1)
    edges = 1 / (1 + np.exp(-z))
    hist, _ = np.histogram(np.clip(c, edges[0], edges[-1]), bins=edges)
    return hist, edges, "logit"
