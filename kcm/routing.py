"""Where routing happens, in one hop: the score C_x of every routing mode, and the threshold.

``score(mode, ...)`` computes C_x per sample; ``decide(C_x, ε | budget)`` applies the
threshold apart (RouteLLM's split): the small model answers where C_x > ε, the large model
answers the rest. ``calibrate`` picks ε so that a target fraction goes to the large model.

Modes: ``judge`` (the system: the judge's C_x), ``cascade`` (the small model's own max-softmax),
``oracle`` (1 where the small model is right: needs gold labels), ``random`` (uniform scores),
``small`` / ``large`` (one model answers everything).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kcm.errors import ConfigError

Mode = Literal["judge", "cascade", "oracle", "random", "small", "large"]
MODES: tuple[Mode, ...] = ("judge", "cascade", "oracle", "random", "small", "large")


def score(
    mode: Mode,
    small_proba: np.ndarray,
    *,
    judge_conf: np.ndarray | None = None,
    gold: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    trained: bool = True,
) -> np.ndarray:
    """C_x for every sample. Before the first learned cycle nothing is trusted (C_x = 0),
    except in ``small`` mode."""
    n = len(small_proba)
    if mode not in MODES:
        raise ConfigError(f"routing mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "small":
        return np.ones(n)
    if not trained or mode == "large":
        return np.zeros(n)
    if mode == "judge":
        return np.zeros(n) if judge_conf is None else np.asarray(judge_conf, dtype=np.float64)
    if mode == "cascade":
        return small_proba.max(axis=1)
    if mode == "oracle":
        if gold is None:
            raise ConfigError("routing mode 'oracle' needs the gold labels of the batch")
        return (small_proba.argmax(axis=1) == gold).astype(float)
    return (rng or np.random.default_rng()).random(n)


@dataclass(frozen=True)
class Decision:
    """Which samples go to the large model, and the ε that decided it."""

    to_large: np.ndarray
    epsilon: float

    @property
    def large_call_rate(self) -> float:
        return float(self.to_large.mean()) if len(self.to_large) else 0.0


def decide(
    confidence: np.ndarray,
    epsilon: float,
    target_rate: float | None = None,
    mode: Mode = "judge",
    max_loss: float | None = None,
) -> Decision:
    """Large where C_x <= ε. In ``small`` / ``large`` mode the scores are 1 / 0 and ε is 0.5;
    otherwise ``target_rate`` (a per-batch budget) or ``max_loss`` (an accuracy budget), when
    given, sets ε on these scores."""
    conf = np.asarray(confidence, dtype=np.float64)
    if mode in ("small", "large"):
        eps = 0.5
    elif target_rate is not None:
        eps = calibrate(conf, target_rate)
    elif max_loss is not None:
        eps = loss_threshold(conf, max_loss)
    else:
        eps = epsilon
    return Decision(to_large=conf <= eps, epsilon=float(eps))


def loss_threshold(confidence: np.ndarray, max_loss: float) -> float:
    """The ε that lets the small model answer the most samples whose expected errors stay
    within ``max_loss`` of the batch: with C_x = P(the small model's answer is right), the
    samples are taken by decreasing C_x while Σ (1 − C_x) ≤ max_loss · n. Against a large
    model that is right where the small one errs, that bounds the accuracy given up to
    ``max_loss`` (when C_x is calibrated); the share sent to the large model then falls by
    itself as the small model gets better."""
    if not 0.0 <= max_loss <= 1.0:
        raise ConfigError(f"routing.max_loss={max_loss}: give a fraction in [0, 1], e.g. 0.01")
    c = np.sort(np.asarray(confidence, dtype=np.float64))[::-1]
    if len(c) == 0:
        return 1.0
    k = int(np.searchsorted(np.cumsum(1.0 - c), max_loss * len(c), side="right"))
    if k >= len(c):
        return float(np.nextafter(c[-1], -np.inf))
    return float(c[k])  # the first sample left out; ties with it go to the large model too


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
