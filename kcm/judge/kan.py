"""KANJudge: the KCM judge, a Kolmogorov–Arnold Network [in, hidden, out] on spline edges."""

from __future__ import annotations

import torch
from torch import nn

from kcm.config import JudgeConfig
from kcm.judge.base import NeuralJudge, Target
from kcm.judge.kan_layer import KANNet


class KANJudge(NeuralJudge):
    def __init__(
        self,
        target: Target = "correctness",
        hidden: int = 16,
        epochs: int = 60,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        seed: int = 0,
        val_fraction: float = 0.2,
        patience: int = 10,
        grid: int = 5,
        k: int = 3,
        grid_eps: float = 1.0,
        prior: str = "none",
    ) -> None:
        super().__init__(
            target,
            hidden,
            epochs,
            lr,
            weight_decay,
            batch_size,
            seed,
            val_fraction,
            patience,
            prior,
        )
        self.grid = grid
        self.k = k
        self.grid_eps = grid_eps

    @classmethod
    def from_config(cls, cfg: JudgeConfig, seed: int = 0) -> KANJudge:
        return cls(**cls.common_args(cfg, seed), grid=cfg.grid, k=cfg.k, grid_eps=cfg.grid_eps)

    def _build(self, in_dim: int, out_dim: int) -> nn.Module:
        return KANNet(
            [in_dim, self.hidden, out_dim],
            grid=self.grid,
            k=self.k,
            seed=self.seed,
            grid_eps=self.grid_eps,
        )

    def _prepare(self, X: torch.Tensor) -> None:
        assert isinstance(self.net_, KANNet)
        self.net_.update_grid(X)

    def to_pykan(self):
        """The trained network as a pykan ``KAN`` (for ``plot()``, ``prune()``, ``auto_symbolic()``)."""
        from kcm.errors import check_is_fitted

        check_is_fitted(self, "net_")
        assert isinstance(self.net_, KANNet)
        return self.net_.to_pykan()
