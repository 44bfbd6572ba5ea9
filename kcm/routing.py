"""Routing: the score (C_x) is computed elsewhere; here only the threshold is applied.

The small model answers a sample when C_x > ε; the large model answers the rest.
``calibrate`` picks ε so that a target fraction of a held-out set goes to the large model.
"""

from __future__ import annotations

import numpy as np

from kcm.errors import ConfigError


def calibrate(confidence: np.ndarray, target_large_rate: float) -> float:
    """The ε at which ``mean(confidence <= ε)`` is as close as ties allow to the target."""
    if not 0.0 <= target_large_rate <= 1.0:
        raise ConfigError(f"target_large_rate={target_large_rate}: give a fraction in [0, 1]")
    c = np.sort(np.asarray(confidence, dtype=np.float64))
    if len(c) == 0:
        raise ConfigError("cannot calibrate ε on an empty set of scores")
    n_large = round(target_large_rate * len(c))
    if n_large <= 0:
        return float(np.nextafter(c[0], -np.inf))
    if n_large >= len(c):
        return float(c[-1])
    return float(c[n_large - 1])


class Router:
    """``route(confidence) -> mask`` of the samples the large model answers."""

    def __init__(self, epsilon: float = 0.98, target_large_rate: float | None = None) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"routing.epsilon={epsilon}: give a value in [0, 1]")
        self.epsilon = epsilon
        self.target_large_rate = target_large_rate

    def threshold(self, confidence: np.ndarray) -> float:
        """ε for these scores: the fixed one, or calibrated to ``target_large_rate``."""
        if self.target_large_rate is None:
            return self.epsilon
        return calibrate(confidence, self.target_large_rate)

    def route(self, confidence: np.ndarray, epsilon: float | None = None) -> np.ndarray:
        eps = self.threshold(confidence) if epsilon is None else epsilon
        return np.asarray(confidence) <= eps
