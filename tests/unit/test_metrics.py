from __future__ import annotations

import numpy as np
import pytest

from kcm.evaluation.metrics import (
    Accuracy,
    AccuracyMatrix,
    GroupAccuracy,
    LargeCallRate,
    PerClassAccuracy,
    bwt,
    forgetting,
)


def test_bwt_and_forgetting_on_hand_made_matrix() -> None:
    R = [
        [0.9],
        [0.7, 0.8],
        [0.6, 0.9, 0.7],
    ]
    # BWT = ((0.6 - 0.9) + (0.9 - 0.8)) / 2 = -0.1
    assert bwt(R) == pytest.approx(-0.1)
    # forgetting: task0 max(0.9, 0.7) - 0.6 = 0.3; task1 max(0.8) - 0.9 = -0.1 -> mean 0.1
    assert forgetting(R) == pytest.approx(0.1)
    assert bwt([[0.5]]) is None and forgetting([[0.5]]) is None


def test_accuracy_matrix_from_per_class_rows() -> None:
    m = AccuracyMatrix()
    m.add_task([0, 1])
    m.update(np.array([1.0, 0.5, np.nan]))
    m.add_task([2])
    m.update(np.array([0.5, 0.5, 1.0]))
    assert m.result() == [[0.75], [0.5, 1.0]]
    assert m.result(classes=[1, 2]) == [[0.5], [0.5, 1.0]]
    s = m.summary(few=[1])
    assert s["bwt"] == pytest.approx(-0.25)
    assert s["forgetting_few"] is None or s["forgetting_few"] == pytest.approx(0.0)
    again = AccuracyMatrix.from_dict(m.to_dict())
    assert again.result() == m.result()
    m.reset()
    assert m.result() == []


def test_accuracy_group_and_rate_objects() -> None:
    pred = np.array([0, 1, 1, 2, 2])
    true = np.array([0, 1, 2, 2, -1])
    acc = Accuracy()
    acc.update(pred, true)
    assert acc.result() == pytest.approx(0.75)
    acc.reset()
    assert acc.result() is None
    g = GroupAccuracy({0: "many", 1: "many", 2: "few"})
    g.update(pred, true)
    assert g.result() == {"many": 1.0, "medium": None, "few": 0.5}
    pc = PerClassAccuracy(4)
    pc.update(pred, true)
    r = pc.result()
    assert r[:3].tolist() == [1.0, 1.0, 0.5] and np.isnan(r[3])
    rate = LargeCallRate()
    rate.update(np.array([True, False, False, True]))
    assert rate.result() == 0.5


def test_tradeoff_curves_send_the_lowest_scores_first() -> None:
    from kcm.evaluation.curves import group_tradeoff_curve, tradeoff_curve, value_at

    y = np.array([0, 1, 2, 2, -1])
    small = np.array([0, 0, 0, 2, 0])  # wrong on samples 1 and 2
    large = np.array([0, 1, 2, 0, 0])  # wrong on sample 3
    score = np.array([0.9, 0.1, 0.5, 0.2, 0.0])  # order (labelled): 1, 3, 2, 0
    rates = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    c = tradeoff_curve(score, small, large, y, rates)
    assert c["accuracy"] == [0.5, 0.75, 0.5, 0.75, 0.75]
    # the group {class 2}: samples 2, 3; the rate still counts all four labelled samples
    g = group_tradeoff_curve(score, small, large, y, y == 2, rates)
    assert g["accuracy"] == [0.5, 0.5, 0.0, 0.5, 0.5]
    assert value_at(g, 0.375) == 0.25
    assert group_tradeoff_curve(score, small, large, y, y == 7, rates) == {
        "rate": [],
        "accuracy": [],
    }
