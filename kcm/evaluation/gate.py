"""The promotion gate: should a challenger replace the champion? A pure function of the two
models' scores on the same held-out evaluation set, so it can be tested and explained.

The Few-group check compares the two versions *at the challenger's large-call rate* (balanced
view) when both reports carry the Few-group trade-off curve (``balanced.few_curve``): a
version that answers more with its small model always loses some of the large model's tail
accuracy, so comparing raw Few accuracy would keep an early champion that sends everything to
the large model forever. Reports without the curve fall back to raw Few accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kcm.evaluation.curves import value_at


@dataclass(frozen=True)
class GateTolerances:
    accuracy_drop: float = 0.01  # overall traffic accuracy may fall by at most this
    few_drop: float = 0.0  # balanced Few-group accuracy may not fall (beyond this)
    large_rate_rise: float = 0.05  # traffic large-call rate may rise by at most this


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return ("promote: " if self.promote else "keep champion: ") + "; ".join(self.reasons)


def _get(scores: Mapping[str, Any], view: str, key: str) -> float | None:
    v = scores.get(view, {}).get(key)
    return None if v is None else float(v)


def decide_promotion(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    tol: GateTolerances | None = None,
) -> Decision:
    """Compare two cycle reports (``traffic`` and ``balanced`` views, as ``kcm.steps.evaluate``
    writes them). The first model is promoted; later ones only if overall accuracy does not
    drop by more than the tolerance, Few-group accuracy does not drop, and the large-call rate
    does not rise beyond the tolerance."""
    tol = tol or GateTolerances()
    if champion is None:
        return Decision(True, ["no champion yet: the first version becomes champion"])
    reasons, ok = [], True
    for view, key, label, allowed, sign in (
        ("traffic", "accuracy", "accuracy", tol.accuracy_drop, +1),
        ("balanced", "accuracy_few", "Few-group accuracy", tol.few_drop, +1),
        ("traffic", "large_call_rate", "large-call rate", tol.large_rate_rise, -1),
    ):
        new, old = _get(challenger, view, key), _get(champion, view, key)
        if key == "accuracy_few":
            label, new, old = _few_at_rate(challenger, champion, label, new, old)
        if new is None or old is None:
            reasons.append(f"{label}: not measured on both, not compared")
            continue
        change = (new - old) * sign  # > 0 is better
        passed = change >= -allowed - 1e-12
        ok &= passed
        word = "ok" if passed else "REFUSED"
        reasons.append(f"{label} {old:.3f} -> {new:.3f} ({word}, tolerance {allowed:.3f})")
    return Decision(ok, reasons)


def _few_at_rate(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any],
    label: str,
    new: float | None,
    old: float | None,
) -> tuple[str, float | None, float | None]:
    """Both versions' Few-group accuracy at the challenger's balanced-view large-call rate,
    read off their threshold-sweep curves; the raw figures when a curve is missing."""
    rate = _get(challenger, "balanced", "large_call_rate")
    if rate is None:
        return label, new, old
    at_new = value_at(challenger.get("balanced", {}).get("few_curve") or {}, rate)
    at_old = value_at(champion.get("balanced", {}).get("few_curve") or {}, rate)
    if at_new is None or at_old is None:
        return label, new, old
    return f"{label} at large-call rate {rate:.2f}", at_new, at_old
