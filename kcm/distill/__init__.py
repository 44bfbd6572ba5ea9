"""Distillation: pure losses, a class-balanced replay buffer and the training hook."""

from kcm.distill.losses import combined_loss, cross_entropy, kl_to_teacher, soften
from kcm.distill.records import Records
from kcm.distill.replay import ReplayBuffer, balanced_quota
from kcm.distill.trainer import distill

__all__ = [
    "Records",
    "ReplayBuffer",
    "balanced_quota",
    "combined_loss",
    "cross_entropy",
    "distill",
    "kl_to_teacher",
    "soften",
]
