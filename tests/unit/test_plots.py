"""The cycle's plots: quantile reliability bins, and every PNG drawn from hand-made inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kcm.evaluation.curves import reliability
from kcm.evaluation.dashboard import plot_dashboard
from kcm.evaluation.plots import plot_matrix, plot_reliability


def _scores(n: int = 540) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    c = 1 - rng.beta(1, 12, n)  # crowded near 1, as a judge's scores are
    return c, rng.random(n) < c


def test_quantile_bins_hold_equal_counts_where_uniform_bins_pile_into_the_last() -> None:
    c, e = _scores()
    q = reliability(c, e, bins=10)
    u = reliability(c, e, bins=10, strategy="uniform")
    assert q["strategy"] == "quantile" and sum(q["count"]) == sum(u["count"]) == len(c)
    assert max(q["count"]) - min(q["count"]) <= 1
    assert max(u["count"]) > 0.5 * len(c)  # equal-width: most samples in one bin
    assert sum(q["hist"]) == len(c) and len(q["hist_edges"]) == 41
    # ECE is the count-weighted gap between the bins' mean confidence and frequency
    gap = sum(
        k / len(c) * abs(a - b)
        for a, b, k in zip(q["confidence"], q["frequency"], q["count"], strict=True)
        if k
    )
    assert q["ece"] == pytest.approx(gap)
    with pytest.raises(ValueError, match="quantile"):
        reliability(c, e, strategy="equal")


def test_quantile_bins_survive_ties() -> None:
    r = reliability(np.ones(50), np.ones(50, bool))
    assert sum(r["count"]) == 50 and r["ece"] == pytest.approx(0.0)


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_each_plot_writes_a_png(tmp_path: Path) -> None:
    c, e = _scores()
    _png(plot_reliability(reliability(c, e), tmp_path / "rel.png"))
    _png(plot_matrix([[0.95], [0.94, 0.91], [0.96, 0.93, 0.89]], tmp_path / "m.png"))
    cycles = [
        {
            "cycle": i,
            "n": 100,
            "large_calls": calls,
            "accuracy": 0.9 + 0.01 * i,
            "large_call_rate": calls / 100,
            "traffic": {"accuracy": 0.92, "baselines": {"large_only": 0.93}},
        }
        for i, calls in enumerate([100, 80, 50, 30])
    ]
    _png(plot_dashboard(cycles, tmp_path / "d.png", title="test"))
