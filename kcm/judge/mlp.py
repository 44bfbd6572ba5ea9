"""MLPJudge: the MCM baseline, the same system with a multilayer-perceptron judge."""

from __future__ import annotations

from torch import nn

from kcm.judge.base import NeuralJudge


class MLPJudge(NeuralJudge):
    def _build(self, in_dim: int, out_dim: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(in_dim, self.hidden), nn.SiLU(), nn.Linear(self.hidden, out_dim)
        )
