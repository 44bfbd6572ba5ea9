"""LogisticJudge: a learned router that reads only the small model's own confidence summary
(log-odds of the top-1 probability, log top-2, log top-1/top-2 margin, log entropy): a
logistic regression, the simplest learned router (bench method ``learned_router``). Next to
the KAN and MLP judges it shows what the input features and the memory add."""

from __future__ import annotations

import numpy as np
from torch import nn

from kcm.judge.base import NeuralJudge, small_output_stats


class LogisticJudge(NeuralJudge):
    def _inputs(self, X: np.ndarray, small_proba: np.ndarray) -> np.ndarray:
        super()._inputs(X, small_proba)  # the same shape checks
        return small_output_stats(np.asarray(small_proba, dtype=np.float32))

    def _build(self, in_dim: int, out_dim: int) -> nn.Module:
        return nn.Linear(in_dim, out_dim)
