from __future__ import annotations

import numpy as np

from kcm.system import class_weights


def test_no_weights_at_beta_zero() -> None:
    assert class_weights(np.array([0, 0, 1]), 0.0) is None


def test_balanced_weights_give_every_class_the_same_total() -> None:
    truth = np.array([0] * 8 + [1] * 2 + [3] * 1)
    w = class_weights(truth, 1.0)
    assert w is not None and np.isclose(w.mean(), 1.0)
    totals = [w[truth == c].sum() for c in (0, 1, 3)]
    assert np.allclose(totals, totals[0])


def test_half_power_sits_between() -> None:
    truth = np.array([0] * 9 + [1] * 1)
    w = class_weights(truth, 0.5)
    assert w is not None
    assert np.isclose(w[truth == 1][0] / w[truth == 0][0], 3.0)  # sqrt(9 / 1)
