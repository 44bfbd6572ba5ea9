from __future__ import annotations

import itertools

import numpy as np
import pytest

from kcm.errors import ConfigError
from kcm.routing import Router, calibrate


def test_route_is_monotone_in_epsilon(rng: np.random.Generator) -> None:
    conf = rng.random(500)
    rates = [Router(eps).route(conf).mean() for eps in np.linspace(0, 1, 21)]
    assert all(a <= b for a, b in itertools.pairwise(rates))
    assert Router(1.0).route(conf).all()
    assert Router(0.0).route(conf).sum() == 0


def test_small_model_answers_only_above_epsilon() -> None:
    conf = np.array([0.97, 0.98, 0.99])
    assert Router(0.98).route(conf).tolist() == [True, True, False]


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_calibrate_hits_target_rate(rng: np.random.Generator, rate: float) -> None:
    conf = rng.random(1000)
    eps = calibrate(conf, rate)
    assert abs((conf <= eps).mean() - rate) <= 0.001


def test_router_with_target_rate_calibrates() -> None:
    conf = np.linspace(0, 1, 100)
    assert Router(0.98, target_large_rate=0.2).route(conf).mean() == pytest.approx(0.2)


def test_bad_values() -> None:
    with pytest.raises(ConfigError):
        Router(1.5)
    with pytest.raises(ConfigError):
        calibrate(np.ones(3), 2.0)
    with pytest.raises(ConfigError):
        calibrate(np.array([]), 0.5)
