"""A bounded, class-balanced replay buffer of past samples with their teacher outputs, so
old and rare classes are rehearsed when the small model learns a new batch."""

from __future__ import annotations

import numpy as np

from kcm.data.batch import OUT_OF_SCOPE
from kcm.distill.records import Records


def balanced_quota(counts: np.ndarray, capacity: int) -> int:
    """Largest per-class quota q with sum(min(count, q)) <= capacity (water-filling)."""
    if counts.sum() <= capacity:
        return int(counts.max()) if len(counts) else 0
    lo, hi = 0, int(counts.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= capacity:
            lo = mid
        else:
            hi = mid - 1
    return lo


class ReplayBuffer:
    """Keeps at most ``capacity`` records; when full, the largest classes give up their oldest
    samples first, so Few classes keep theirs."""

    def __init__(self, capacity: int = 3000, seed: int = 0) -> None:
        self.capacity = capacity
        self.seed = seed
        self.records_: Records | None = None

    def __len__(self) -> int:
        return 0 if self.records_ is None else len(self.records_)

    def add(self, records: Records) -> None:
        # only samples with a label or a large-model answer (a class, or out of scope)
        keep = (records.target >= 0) | (records.target == OUT_OF_SCOPE)
        new = records.subset(np.flatnonzero(keep))
        if len(new) == 0 or self.capacity == 0:
            return
        merged = new if self.records_ is None else Records.concat([self.records_, new])
        self.records_ = merged.subset(self._select(merged))

    def _select(self, r: Records) -> np.ndarray:
        if len(r) <= self.capacity:
            return np.arange(len(r))
        classes, inverse = np.unique(r.target, return_inverse=True)
        counts = np.bincount(inverse)
        q = balanced_quota(counts, self.capacity)
        keep: list[np.ndarray] = []
        for ci in range(len(classes)):
            idx = np.flatnonzero(inverse == ci)
            # newest first (higher cycle, later position)
            order = np.lexsort((-idx, -r.cycle[idx]))
            keep.append(idx[order[:q]])
        return np.sort(np.concatenate(keep))

    def sample(self, n: int, rng: np.random.Generator) -> Records | None:
        if self.records_ is None or n <= 0:
            return None
        n = min(n, len(self.records_))
        return self.records_.subset(np.sort(rng.choice(len(self.records_), n, replace=False)))

    def class_counts(self, n_classes: int) -> np.ndarray:
        if self.records_ is None:
            return np.zeros(n_classes, dtype=np.int64)
        t = self.records_.target
        return np.bincount(t[t >= 0], minlength=n_classes)
