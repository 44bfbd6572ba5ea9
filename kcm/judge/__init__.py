"""Judges: a score C_x per sample that says whether the small model can answer alone."""

from __future__ import annotations

from kcm.config import JudgeConfig
from kcm.judge.base import TARGETS, Judge, NeuralJudge, memory_features, small_output_stats
from kcm.judge.kan import KANJudge
from kcm.judge.mlp import MLPJudge

JUDGES: dict[str, type[NeuralJudge]] = {"kan": KANJudge, "mlp": MLPJudge}


def make_judge(cfg: JudgeConfig, seed: int = 0) -> NeuralJudge:
    """Build the judge named by ``cfg.kind`` (``kan`` = KCM, ``mlp`` = MCM)."""
    if cfg.kind not in JUDGES:
        raise ValueError(f"judge.kind={cfg.kind!r}; choose one of {sorted(JUDGES)}")
    common = dict(
        target=cfg.target,
        hidden=cfg.hidden,
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        seed=seed,
        val_fraction=cfg.val_fraction,
        patience=cfg.patience,
    )
    if cfg.kind == "kan":
        return KANJudge(**common, grid=cfg.grid, k=cfg.k, grid_eps=cfg.grid_eps)
    return MLPJudge(**common)


__all__ = [
    "JUDGES",
    "TARGETS",
    "Judge",
    "KANJudge",
    "MLPJudge",
    "NeuralJudge",
    "make_judge",
    "memory_features",
    "small_output_stats",
]
