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


def _with_curve(acc: float, few: float, rate: float, bal_rate: float, curve: list[float]) -> dict:
    s = _scores(acc, few, rate)
    s["balanced"].update(
        large_call_rate=bal_rate,
        few_curve={"rate": [0.0, 0.5, 1.0], "accuracy": curve},
    )
    return s


def test_few_group_is_compared_at_the_challengers_large_call_rate() -> None:
    # the champion sends everything to the large model: raw Few 0.90 is the large model's;
    # at the challenger's rate (0.5) its weak small model would answer half: Few 0.40
    champ = _with_curve(0.88, 0.90, 1.0, 1.0, [0.0, 0.40, 0.90])
    chal = _with_curve(0.92, 0.78, 0.35, 0.5, [0.2, 0.78, 0.90])
    d = decide_promotion(chal, champ)
    assert d.promote, d.summary()
    assert "Few-group accuracy at large-call rate 0.50 0.400 -> 0.780 (ok" in d.summary()
    # a challenger whose tail is worse than the champion's at the same rate is refused
    worse = _with_curve(0.92, 0.78, 0.35, 0.5, [0.0, 0.30, 0.90])
    d = decide_promotion(worse, champ)
    assert not d.promote and "0.400 -> 0.300 (REFUSED" in d.summary()
    # interpolation between curve points
    mid = _with_curve(0.92, 0.78, 0.35, 0.25, [0.0, 0.40, 0.90])
    assert "at large-call rate 0.25 0.200 -> 0.200 (ok" in decide_promotion(mid, champ).summary()


def test_reports_without_the_curve_fall_back_to_raw_few_accuracy() -> None:
    champ = _scores(0.88, 0.90, 1.0)
    chal = _with_curve(0.92, 0.78, 0.35, 0.5, [0.2, 0.78, 0.90])
    d = decide_promotion(chal, champ)
    assert not d.promote and "Few-group accuracy 0.900 -> 0.780 (REFUSED" in d.summary()
