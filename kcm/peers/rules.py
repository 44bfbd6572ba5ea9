"""The peers' decision rules as pure functions on arrays (unit-tested on hand-made inputs).

Each returns, per request, whether the large model is called; the policies in this package
apply them one request at a time.
"""

from __future__ import annotations

import numpy as np


def margin(proba: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (margin sampling: a small margin is uncertain)."""
    p = np.sort(np.asarray(proba, dtype=np.float64), axis=1)
    return p[:, -1] - (p[:, -2] if p.shape[1] > 1 else 0.0)


def entropy(proba: np.ndarray) -> np.ndarray:
    """Prediction entropy per row in nats (natural log, as scipy's ``entropy``)."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def committee_votes(current: np.ndarray, committee: np.ndarray) -> np.ndarray:
    """How many committee members (rows of ``committee``, shape (m, n)) give each request the
    current student's answer (``current``, shape (n,))."""
    return (np.asarray(committee) == np.asarray(current)[None, :]).sum(axis=0)


def uncertain(criterion: str, value: np.ndarray, threshold: float) -> np.ndarray:
    """The neural-caching call rule (Ramírez et al., 2023): margin below the threshold,
    entropy above it, or at most ``threshold`` committee votes for the current answer."""
    if criterion == "margin":
        return value < threshold
    if criterion == "entropy":
        return value > threshold
    if criterion == "qbc":
        return value <= threshold
    raise ValueError(f"criterion={criterion!r}; choose margin, entropy or qbc")


def budget_gate(want: bool, remaining_budget: int, remaining_items: int) -> bool:
    """Neural caching's budget: call when the rule wants to and budget is left; call anyway
    once the budget left covers every request still to come (``remaining_items`` counts
    this one)."""
    if remaining_budget <= 0:
        return False
    return want or remaining_budget >= remaining_items


def knn_vote(
    sims: np.ndarray, labels: np.ndarray, gram: np.ndarray, n_classes: int
) -> tuple[np.ndarray, float, float]:
    """OCaTS's k-NN student on the k nearest cached answers (Stogiannidis et al., 2023).

    ``sims``: cosine similarity of the query to each neighbour; ``labels``: their answers;
    ``gram``: the neighbours' pairwise cosine similarities (k, k). Weights are 1/d² with
    d = 1 - cos. Returns the class distribution (weighted votes), its entropy (nats) and the
    cosine distance of the query to the neighbours' weighted centroid."""
    d = np.clip(1.0 - np.asarray(sims, dtype=np.float64), 0.0, 2.0)
    w = 1.0 / (d + 1e-10) ** 2
    p = np.bincount(np.asarray(labels), weights=w, minlength=n_classes)
    p = np.maximum(p / p.sum(), 1e-10)
    p = p / p.sum()
    wc = 1.0 / (d + 1e-6) ** 2
    wc = wc / wc.sum()
    # |sum w_i x_i|^2 = w' G w for unit rows x_i; cos(q, c) = (w . sims) / |c|
    norm = float(np.sqrt(max(wc @ np.asarray(gram, dtype=np.float64) @ wc, 1e-24)))
    cos_c = float(wc @ np.asarray(sims, dtype=np.float64)) / norm
    h = float(-(p * np.log(p)).sum())
    return p, h, 1.0 - cos_c


def ocats_calls(entropy_value: float, centroid_distance: float, t_h: float, t_c: float) -> bool:
    """OCaTS calls the teacher when the neighbours disagree (entropy > t_H) or the query is
    far from them (distance to their weighted centroid > t_c)."""
    return entropy_value > t_h or centroid_distance > t_c


def deferral_target(pred: int, teacher: int, calibration: float) -> float:
    """Online cascade learning's target for a level's deferral head (Nie et al., 2024): 1 when
    the level disagrees with the LLM, raised by a calibration term, capped at 1."""
    return min(float(pred != teacher) + calibration, 1.0)


def acts(defer_prob: float, explore_prob: float, coin: float) -> bool:
    """A cascade level answers when its deferral head says not to defer (≤ 0.5) and the
    decaying exploration coin (defer anyway with probability ``explore_prob``) allows it."""
    return defer_prob <= 0.5 and coin >= explore_prob


__all__ = [
    "acts",
    "budget_gate",
    "committee_votes",
    "deferral_target",
    "entropy",
    "knn_vote",
    "margin",
    "ocats_calls",
    "uncertain",
]
