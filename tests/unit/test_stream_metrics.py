"""Prequential stream metrics, the sweep read-offs and the accuracy-budget routing rule."""

from __future__ import annotations

import numpy as np
import pytest

from kcm import routing
from kcm.errors import ConfigError
from kcm.evaluation.stream import StreamMetrics, accuracy_at_share, calls_to_reach, phi


def test_stream_metrics_delivered_accuracy_and_late_share() -> None:
    m = StreamMetrics(late=0.25)
    for i in range(4):  # four cycles of 10; the large share falls 1.0, 0.6, 0.4, 0.2
        called = np.arange(10) < [10, 6, 4, 2][i]
        answer = np.zeros(10, int)
        answer[: 5 + i] = 1
        m.update(answer, np.ones(10, int), called, learn_seconds=1.0 + i, serve_seconds=0.01)
    r = m.result()
    assert r["stream_accuracy"] == pytest.approx((5 + 6 + 7 + 8) / 40)
    assert r["stream_large_share"] == pytest.approx(22 / 40)
    assert r["late_large_share"] == pytest.approx(0.2)  # the last quarter: the last cycle
    assert r["curves"]["cumulative_calls"] == [10, 16, 20, 22]
    assert r["curves"]["learn_seconds"] == [1.0, 2.0, 3.0, 4.0]
    assert r["curves"]["serve_ms_per_sample"][0] == pytest.approx(1.0)


def test_late_as_a_count_of_samples_and_unknown_gold() -> None:
    m = StreamMetrics(late=5)
    m.update(np.zeros(10, int), np.r_[np.zeros(5, int), -np.ones(5, int)], np.arange(10) >= 5)
    r = m.result()
    assert r["stream_accuracy"] == 1.0  # rows without a gold label are not scored
    assert r["late_large_share"] == 1.0  # the last 5 samples were all called


def test_counts_give_the_same_figures_as_samples() -> None:
    a, b = StreamMetrics(), StreamMetrics()
    a.update(np.r_[np.ones(7), np.zeros(3)], np.ones(10), np.arange(10) < 4)
    b.update_counts(10, 7, 10, 4)
    ra, rb = a.result(), b.result()
    for k in ("stream_accuracy", "stream_large_share", "late_large_share"):
        assert ra[k] == pytest.approx(rb[k])


def test_sweep_read_offs_on_the_envelope() -> None:
    pts = [(0.2, 0.70), (0.5, 0.80), (0.4, 0.60), (0.8, 0.86)]
    assert accuracy_at_share(pts, 0.35) == pytest.approx(0.70 + 0.10 * 0.15 / 0.3)
    assert accuracy_at_share(pts, 0.1) is None  # cheaper than any point
    assert accuracy_at_share(pts, 0.9) == pytest.approx(0.86)
    # 0.83 is reached between (0.5, 0.80) and (0.8, 0.86): share 0.65, 65 calls of 100
    assert calls_to_reach(pts, 0.83, 100) == pytest.approx(65.0)
    assert calls_to_reach(pts, 0.9, 100) is None
    assert phi(0.83, 0.4, 0.1) == pytest.approx(0.79)


def test_accuracy_budget_routing_takes_the_surest_first() -> None:
    c = np.array([0.99, 0.97, 0.5, 0.999, 0.9])
    # Σ(1 − C) in decreasing C: .001, .011, .041, .141, .641; budget 0.01·5 = 0.05
    eps = routing.loss_threshold(c, 0.01)
    d = routing.decide(c, 0.98, max_loss=0.01)
    assert eps == pytest.approx(0.9)
    assert d.to_large.tolist() == [False, False, True, False, True]
    assert routing.decide(c, 0.98, max_loss=0.0).to_large.sum() == 5
    assert not routing.decide(c, 0.98, max_loss=1.0).to_large.any()
    with pytest.raises(ConfigError, match="max_loss"):
        routing.loss_threshold(c, 1.5)


def test_call_budget_and_accuracy_budget_are_exclusive() -> None:
    from kcm.config import KCMConfig, with_overrides

    with pytest.raises(Exception, match="keep one"):
        with_overrides(KCMConfig(), ["routing.target_large_rate=0.3", "routing.max_loss=0.01"])
