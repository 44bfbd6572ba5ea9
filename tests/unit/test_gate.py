from __future__ import annotations

from kcm.evaluation.gate import GateTolerances, decide_promotion


def _scores(acc: float, few: float, rate: float) -> dict:
    return {
        "traffic": {"accuracy": acc, "large_call_rate": rate},
        "balanced": {"accuracy_few": few},
    }


def test_first_version_is_promoted() -> None:
    d = decide_promotion(_scores(0.5, 0.1, 1.0), None)
    assert d.promote and "first version" in d.summary()


def test_better_or_within_tolerance_is_promoted() -> None:
    champ = _scores(0.90, 0.70, 0.40)
    assert decide_promotion(_scores(0.91, 0.70, 0.35), champ).promote
    assert decide_promotion(_scores(0.895, 0.70, 0.44), champ).promote


def test_each_rule_refuses_with_its_reason() -> None:
    champ = _scores(0.90, 0.70, 0.40)
    few = decide_promotion(_scores(0.95, 0.60, 0.30), champ)
    assert not few.promote and "Few-group accuracy 0.700 -> 0.600 (REFUSED" in few.summary()
    acc = decide_promotion(_scores(0.85, 0.80, 0.30), champ)
    assert not acc.promote and "accuracy 0.900 -> 0.850 (REFUSED" in acc.summary()
    rate = decide_promotion(_scores(0.92, 0.80, 0.50), champ, GateTolerances(large_rate_rise=0.05))
    assert not rate.promote and "large-call rate 0.400 -> 0.500 (REFUSED" in rate.summary()
