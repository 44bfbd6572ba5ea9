"""Distillation losses as pure functions of logits and target distributions (per sample).

- ``cross_entropy``: on labels, where labels exist; with ``log_prior`` (τ·log π per class) the
  logit-adjusted loss of Menon et al. (2021), whose minimiser answers without the class prior.
- ``kl_to_teacher``: T² · KL(teacher_T ‖ student_T), the KL between the softened teacher and
  student distributions; used for L_ls (teacher = the large model, where C_l > threshold) and
  L_js (teacher = the judge or the small model's own confirmed answer, where C_x > ε).
All return one loss per sample; masks and weights are applied by ``combined_loss``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T), renormalised: the teacher distribution at temperature T."""
    logp = torch.log(probs.clamp_min(1e-12)) / temperature
    return torch.softmax(logp, dim=-1)


def kl_to_teacher(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """T² · KL(softened teacher ‖ softened student), one value per sample (0 when equal)."""
    t = soften(teacher_probs, temperature)
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (t * (torch.log(t.clamp_min(1e-12)) - log_s)).sum(dim=-1)
    return kl * temperature**2


def cross_entropy(
    student_logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy per sample; rows with label -1 give 0. ``log_prior`` (per class, already
    scaled by τ) is added to the logits first (logit adjustment)."""
    safe = labels.clamp_min(0)
    logits = student_logits if log_prior is None else student_logits + log_prior
    ce = F.cross_entropy(logits, safe, reduction="none")
    return torch.where(labels >= 0, ce, torch.zeros_like(ce))


def combined_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    large_probs: torch.Tensor,
    large_mask: torch.Tensor,
    judge_probs: torch.Tensor,
    judge_mask: torch.Tensor,
    *,
    w_ce: float,
    w_ls: float,
    w_js: float,
    temperature: float,
    weights: torch.Tensor | None = None,
    log_prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """w_ce·CE(labels) + w_ls·L_ls·[C_l > thr] + w_js·L_js·[C_x > ε], per sample."""
    loss = w_ce * cross_entropy(student_logits, labels, log_prior)
    if w_ls > 0 and bool(large_mask.any()):
        lp = torch.where(large_mask[:, None], large_probs, torch.ones_like(large_probs))
        loss = loss + w_ls * torch.where(
            large_mask, kl_to_teacher(student_logits, lp, temperature), torch.zeros_like(loss)
        )
    if w_js > 0 and bool(judge_mask.any()):
        jp = torch.where(judge_mask[:, None], judge_probs, torch.ones_like(judge_probs))
        loss = loss + w_js * torch.where(
            judge_mask, kl_to_teacher(student_logits, jp, temperature), torch.zeros_like(loss)
        )
    return loss if weights is None else loss * weights
