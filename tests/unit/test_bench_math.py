"""The bench's pieces on hand-made arrays: the oracle ceiling, APGR, the promotion gate fed
from label arrays, the method table, and the --budget check (no run needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kcm.bench import METHODS, ROUTERS, RUNS, check_budget
from kcm.bench.methods import METHODS_TABLE, SCORERS
from kcm.errors import ConfigError
from kcm.evaluation.curves import apgr, ceiling, group_tradeoff_curve, tradeoff_curve
from kcm.evaluation.gate import decide_promotion
from kcm.evaluation.report import view_metrics


def test_the_ceiling_spends_calls_only_where_they_help() -> None:
    y = np.array([0, 1, 2, 3, 4, 5])
    small = np.array([0, 9, 9, 3, 9, 5])  # wrong on 1, 2, 4
    large = np.array([0, 1, 9, 3, 4, 9])  # right on 1 and 4 (not on 2)
    assert ceiling(small, large, y, 0.0).tolist() == small.tolist()
    one = ceiling(small, large, y, 1 / 6)  # one call: the first useful sample
    assert (one == y).sum() == (small == y).sum() + 1
    full = ceiling(small, large, y, 1.0)  # more calls than useful samples: no harm done
    assert full.tolist() == [0, 1, 9, 3, 4, 5]
    assert small.tolist() == [0, 9, 9, 3, 9, 5]  # the input is not modified


def test_apgr_of_the_best_and_the_worst_order() -> None:
    y = np.arange(100) % 2
    small = np.where(np.arange(100) < 60, y, 1 - y)  # wrong on the last 40
    large = y.copy()
    good = tradeoff_curve(np.arange(100)[::-1].astype(float), small, large, y)  # wrong first
    bad = tradeoff_curve(np.arange(100).astype(float), small, large, y)  # right first
    assert good["accuracy"][0] == pytest.approx(0.6) and good["accuracy"][-1] == 1.0
    # perfect: the gap closes linearly over the 40% it is wrong on, area 0.4/2 + 0.6 = 0.8;
    # the worst order wastes 60% of calls first, area 0.4/2 = 0.2; a random router gets 0.5
    assert apgr(good) == pytest.approx(0.8) and apgr(bad) == pytest.approx(0.2)
    flat = {"rate": [0.0, 1.0], "accuracy": [0.7, 0.7]}
    assert apgr(flat) is None  # no gap to recover


def _report(label: np.ndarray, y: np.ndarray, to_large: np.ndarray, few: np.ndarray) -> dict:
    groups = {c: ("few" if c in set(y[few].tolist()) else "many") for c in np.unique(y)}
    view = view_metrics(label, y, to_large, groups)
    small = label.copy()
    view["few_curve"] = group_tradeoff_curve(np.zeros(len(y)), small, y, y, few)
    return {"traffic": view, "balanced": view}


def test_the_gate_on_reports_built_from_label_arrays() -> None:
    y = np.array([0] * 8 + [1] * 2)
    few = y == 1
    champ = _report(np.array([0] * 8 + [1, 1]), y, np.zeros(10, bool), few)
    same = _report(np.array([0] * 8 + [1, 1]), y, np.zeros(10, bool), few)
    tail_lost = _report(np.array([0] * 8 + [0, 0]), y, np.zeros(10, bool), few)
    costly = _report(np.array([0] * 8 + [1, 1]), y, np.arange(10) < 5, few)
    assert decide_promotion(same, champ).promote
    d = decide_promotion(tail_lost, champ)
    assert not d.promote and "REFUSED" in d.summary() and "Few-group" in d.summary()
    d = decide_promotion(costly, champ)
    assert not d.promote and "large-call rate 0.000 -> 0.500 (REFUSED" in d.summary()


def test_every_method_is_a_row_with_a_scorer_and_a_run() -> None:
    assert len(set(METHODS)) == len(METHODS) == len(METHODS_TABLE)
    for m in METHODS_TABLE:
        assert m.answers in SCORERS, m.name
        assert (m.name in RUNS) == (m.overrides is not None), m.name
    assert next(iter(RUNS)) == "kcm"  # the run whose answer cache the others reuse
    assert set(ROUTERS) == {m.name for m in METHODS_TABLE if m.scored}


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_a_budget_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match=f"--budget {bad}: give a large-call rate in"):
        check_budget(bad)
    assert check_budget(0.3) == 0.3


def test_the_cli_refuses_a_bad_budget_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kcm_app.cli import main

    assert main(["bench", "--budget", "1.5", "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "--budget 1.5: give a large-call rate in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
