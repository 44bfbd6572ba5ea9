"""How far an incoming batch is from what the system has learned, as one number per batch.

The score is the two-sample Kolmogorov-Smirnov statistic between the batch's confidence C_x
under the version that answers it and that version's C_x on the held-out traffic view
(recorded when the version was evaluated): 0 when the batch looks like the traffic the system
was checked on, up to 1 when the two do not overlap. Inputs from another domain, or classes
the stream never showed, lower C_x across the batch and raise the score; a batch like the
others does not. Pure numpy, no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """sup_x |F_a(x) - F_b(x)| of the two empirical distributions."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(a) or not len(b):
        raise ValueError(f"ks_statistic needs two non-empty samples, got {len(a)} and {len(b)}")
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / len(a)
    fb = np.searchsorted(b, x, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def drift_score(batch_conf: np.ndarray, reference_conf: np.ndarray, bound: float) -> dict[str, Any]:
    """The batch's drift: the KS score, both means of C_x, and whether it is above ``bound``."""
    score = ks_statistic(batch_conf, reference_conf)
    return {
        "score": score,
        "bound": float(bound),
        "alarm": bool(score > bound),
        "mean_confidence": float(np.mean(batch_conf)),
        "reference_mean_confidence": float(np.mean(reference_conf)),
        "n": len(batch_conf),
    }
