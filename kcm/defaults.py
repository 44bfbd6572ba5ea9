"""The settings left to kcm (``auto`` or ``null`` in ``params.yaml``), decided in one place
from what the task's features and its large model are.

Two facts decide them, each measured on the OCaTS protocol (BENCHMARKS.md, issue #22):

- **An encoder student** (``features.kind`` resolves to ``encoder``) is a linear model over
  384 dense inputs: trained anew on the whole memory each cycle it costs about a second, and
  it is then the same kind of model as the judge's cross-fitting models, so the judge learns
  the errors of the model it routes for. A TF-IDF or numeric student keeps training.
- **An LLM teacher** (``openai``, ``replay``) answers with labels and is itself wrong on a
  share of inputs (GPT-4: 17 % of BANKING77). Its answers are distilled as they are (T = 1),
  the small model does not learn its own confident answers (``w_js = 0``: no label is ever
  shown, so that would confirm its mistakes), and routing spends a budget of expected
  disagreements (``max_loss = 0.15``) instead of ε = 0.98: a disagreement with a teacher that
  errs is often the teacher's error, so requiring 98 % agreement sends most traffic to it.
"""

from __future__ import annotations

from kcm.config import KCMConfig, with_overrides
from kcm.data.batch import Task
from kcm.features import LLM_BACKENDS, features_kind

#: the refitted (encoder) student's recipe: trained anew on the whole memory each cycle; the
#: bench's peers use it too, so kcm and peers are compared on the same student
REFIT_LR, REFIT_EPOCHS = 0.05, 20


def is_llm(cfg: KCMConfig, task: Task) -> bool:
    """Whether the large model is an LLM endpoint (or a recording of one)."""
    from kcm.models.large import resolve_backend

    return resolve_backend(cfg, task) in LLM_BACKENDS


def resolved(cfg: KCMConfig, task: Task) -> KCMConfig:
    """``cfg`` with every ``auto`` / ``null`` setting that kcm decides made concrete."""
    refit = features_kind(task, cfg) == "encoder"
    llm = is_llm(cfg, task)
    s, d, r = cfg.small, cfg.distill, cfg.routing
    out: dict[str, object] = {}
    if s.refit is None:
        out["small.refit"] = refit
    small_refit = refit if s.refit is None else s.refit
    if s.lr is None:
        out["small.lr"] = REFIT_LR if small_refit else 5e-3
    if s.epochs is None:
        out["small.epochs"] = REFIT_EPOCHS if small_refit else 8
    if d.w_js is None:
        out["distill.w_js"] = 0.0 if llm else 0.5
    if d.temperature is None:
        out["distill.temperature"] = 1.0 if llm else 2.0
    if r.max_loss == "auto":
        out["routing.max_loss"] = 0.15 if llm and r.target_large_rate is None else None
    return with_overrides(cfg, out) if out else cfg
