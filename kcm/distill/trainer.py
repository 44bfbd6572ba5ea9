"""The thin hook between the pure losses and the small model's training loop."""

from __future__ import annotations

import numpy as np
import torch

from kcm.config import DistillConfig
from kcm.distill.losses import combined_loss
from kcm.distill.records import Records
from kcm.models.small import SmallModel


def distill(
    model: SmallModel, records: Records, cfg: DistillConfig, epochs: int | None = None
) -> SmallModel:
    """Train ``model`` on ``records`` with CE on labels, L_ls on confident large-model outputs
    and L_js on confident judge outputs (the last two only when ``cfg.enabled``)."""
    labels = torch.from_numpy(records.label.astype(np.int64))
    large = np.nan_to_num(records.large, nan=0.0)
    judge = np.nan_to_num(records.judge, nan=0.0)
    has_large = ~np.isnan(records.large).any(axis=1)
    large_conf = np.where(has_large, large.max(axis=1), 0.0)
    large_mask = has_large & (large_conf > cfg.large_threshold)
    judge_mask = ~np.isnan(records.judge).any(axis=1)
    if not cfg.enabled:
        large_mask[:] = False
        judge_mask[:] = False
    lp = torch.from_numpy(large.astype(np.float32))
    jp = torch.from_numpy(judge.astype(np.float32))
    lm = torch.from_numpy(large_mask)
    jm = torch.from_numpy(judge_mask)
    usable = (records.label >= 0) | large_mask | judge_mask
    if not usable.any():
        return model

    log_prior = None
    if cfg.logit_adjust > 0:
        labelled = records.label[records.label >= 0]
        counts = np.bincount(labelled, minlength=records.large.shape[1]) + 1.0  # Laplace
        log_prior = torch.from_numpy(
            (cfg.logit_adjust * np.log(counts / counts.sum())).astype(np.float32)
        )

    def loss_fn(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return combined_loss(
            logits,
            labels[rows],
            lp[rows],
            lm[rows],
            jp[rows],
            jm[rows],
            w_ce=cfg.w_ce,
            w_ls=cfg.w_ls,
            w_js=cfg.w_js,
            temperature=cfg.temperature,
            log_prior=log_prior,
        )

    idx = np.flatnonzero(usable)
    sub = records.subset(idx)
    labels, lp, lm, jp, jm = labels[idx], lp[idx], lm[idx], jp[idx], jm[idx]
    return model.partial_fit(sub.features.small, loss_fn, epochs=epochs)
