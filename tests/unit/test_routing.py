"""kcm.routing: every mode's score and the one threshold rule that production runs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kcm.errors import ConfigError
from kcm.routing import MODES, calibrate, decide, score


def test_route_is_monotone_in_epsilon(rng: np.random.Generator) -> None:
    conf = rng.random(500)
    rates = [decide(conf, eps).to_large.mean() for eps in np.linspace(0, 1, 21)]
    assert all(a <= b for a, b in itertools.pairwise(rates))
    assert decide(conf, 1.0).to_large.all()
    assert decide(conf, 0.0).to_large.sum() == 0


def test_small_model_answers_only_above_epsilon() -> None:
    conf = np.array([0.97, 0.98, 0.99])
    d = decide(conf, 0.98)
    assert d.to_large.tolist() == [True, True, False] and d.epsilon == 0.98


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_calibrate_hits_target_rate(rng: np.random.Generator, rate: float) -> None:
    conf = rng.random(1000)
    eps = calibrate(conf, rate)
    assert abs((conf <= eps).mean() - rate) <= 0.001


def test_a_budget_calibrates_epsilon_on_the_batch() -> None:
    conf = np.linspace(0, 1, 100)
    d = decide(conf, 0.98, target_rate=0.2)
    assert d.large_call_rate == pytest.approx(0.2) and d.epsilon < 0.98


def test_scores_of_every_mode() -> None:
    sp = np.array([[0.9, 0.1], [0.4, 0.6], [0.55, 0.45]])
    gold = np.array([0, 0, 1])
    judge = np.array([0.2, 0.7, 0.99])
    assert score("judge", sp, judge_conf=judge).tolist() == judge.tolist()
    assert score("cascade", sp).tolist() == [0.9, 0.6, 0.55]
    assert score("oracle", sp, gold=gold).tolist() == [1.0, 0.0, 0.0]
    assert score("small", sp).tolist() == [1.0, 1.0, 1.0]
    assert score("large", sp).tolist() == [0.0, 0.0, 0.0]
    r = score("random", sp, rng=np.random.default_rng(0))
    assert r.tolist() == np.random.default_rng(0).random(3).tolist()
    # one model answers everything in small / large mode, whatever the budget
    assert not decide(score("small", sp), 0.98, target_rate=0.5, mode="small").to_large.any()
    assert decide(score("large", sp), 0.98, mode="large").to_large.all()


@pytest.mark.parametrize("mode", [m for m in MODES if m != "small"])
def test_nothing_is_trusted_before_the_first_learned_cycle(mode: str) -> None:
    sp = np.full((4, 2), 0.5)
    conf = score(mode, sp, judge_conf=np.ones(4), gold=np.zeros(4, int), trained=False)  # type: ignore[arg-type]
    assert decide(conf, 0.5).to_large.all()


def test_bad_values() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        score("nope", np.ones((2, 2)))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="gold labels"):
        score("oracle", np.ones((2, 2)))
    with pytest.raises(ConfigError):
        calibrate(np.ones(3), 2.0)
    with pytest.raises(ConfigError):
        calibrate(np.array([]), 0.5)
