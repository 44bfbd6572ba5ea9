"""Training records: what the system learned from one sample (features and teachers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kcm.features import Features, stack_features


@dataclass
class Records:
    """Per-sample training material.

    ``label``: the class the learner was given (-1 none); ``target``: the label, else the large
    model's answer (-1 none): what is learned as right (the judge's and replay's target); ``large``: the large model's distribution (NaN rows where
    not asked); ``judge``: the L_js teacher (NaN rows where C_x <= ε); ``cycle``: when seen.
    """

    features: Features
    label: np.ndarray
    target: np.ndarray
    large: np.ndarray
    judge: np.ndarray
    cycle: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, idx: np.ndarray) -> Records:
        return Records(
            features=self.features.subset(idx),
            label=self.label[idx],
            target=self.target[idx],
            large=self.large[idx],
            judge=self.judge[idx],
            cycle=self.cycle[idx],
        )

    @staticmethod
    def concat(parts: list[Records]) -> Records:
        parts = [p for p in parts if len(p)]
        return Records(
            features=stack_features([p.features for p in parts]),
            label=np.concatenate([p.label for p in parts]),
            target=np.concatenate([p.target for p in parts]),
            large=np.vstack([p.large for p in parts]),
            judge=np.vstack([p.judge for p in parts]),
            cycle=np.concatenate([p.cycle for p in parts]),
        )
