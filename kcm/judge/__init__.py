"""Judges: a score C_x per sample that says whether the small model can answer alone."""

from __future__ import annotations

from kcm import registry
from kcm.config import JudgeConfig
from kcm.judge.base import TARGETS, Judge, NeuralJudge, memory_features, small_output_stats
from kcm.judge.kan import KANJudge
from kcm.judge.mlp import MLPJudge

JUDGES = tuple(registry.JUDGES)


def make_judge(cfg: JudgeConfig, seed: int = 0) -> NeuralJudge:
    """Build the judge named by ``cfg.kind`` (``kan`` = KCM, ``mlp`` = MCM)."""
    judge: NeuralJudge = registry.load("judge.kind", cfg.kind).from_config(cfg, seed)
    return judge


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
