"""Evaluation: accuracy, Many/Medium/Few, large-call rate, the accuracy matrix, BWT, forgetting."""

from kcm.evaluation.metrics import (
    Accuracy,
    AccuracyMatrix,
    GroupAccuracy,
    LargeCallRate,
    PerClassAccuracy,
    auroc,
    bwt,
    forgetting,
)

__all__ = [
    "Accuracy",
    "AccuracyMatrix",
    "GroupAccuracy",
    "LargeCallRate",
    "PerClassAccuracy",
    "auroc",
    "bwt",
    "forgetting",
]
