from __future__ import annotations

import numpy as np

from kcm.distill import Records, ReplayBuffer, balanced_quota
from kcm.features import Features


def _records(truth: np.ndarray, cycle: int) -> Records:
    n = len(truth)
    return Records(
        features=Features(small=np.zeros((n, 3), np.float32), dense=np.zeros((n, 2), np.float32)),
        label=truth.copy(),
        target=truth.copy(),
        large=np.full((n, 4), np.nan),
        judge=np.full((n, 4), np.nan),
        cycle=np.full(n, cycle),
    )


def test_balanced_quota() -> None:
    assert balanced_quota(np.array([100, 10, 2]), 30) == 18
    assert balanced_quota(np.array([5, 5]), 100) == 5


def test_replay_is_bounded_and_keeps_rare_classes() -> None:
    buf = ReplayBuffer(capacity=50)
    buf.add(_records(np.array([0] * 100 + [1] * 5 + [2] * 2), cycle=0))
    buf.add(_records(np.array([0] * 60 + [3] * 3), cycle=1))
    assert len(buf) == 50
    counts = buf.class_counts(4)
    assert counts[1] == 5 and counts[2] == 2 and counts[3] == 3
    kept0 = buf.records_.cycle[buf.records_.target == 0]
    assert (kept0 == 1).all()  # the newest samples of the big class stay


def test_samples_without_answer_are_not_stored() -> None:
    buf = ReplayBuffer(capacity=10)
    buf.add(_records(np.array([-1, -1, 0]), 0))
    assert len(buf) == 1
    assert buf.sample(5, np.random.default_rng(0)) is not None
