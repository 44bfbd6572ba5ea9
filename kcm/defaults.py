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
  shown, so that would confirm its mistakes), and the small model answers where C_x > 0.4
  instead of 0.98: a disagreement with a teacher that errs is as often the teacher's error
  (on the queries kcm answered alone, 141 disagreements the small model got right against 106
  GPT-4 got right), so requiring 98 % agreement sends most traffic to it for nothing. A fixed
  ε also let the share fall faster than a per-batch budget of expected disagreements
  (``max_loss``): 16.7 % of calls against 21.8 % at the same accuracy.
- **The judge of an encoder student** learns only from queries whose answer is known: the
  gold seeds and those the large model answered, the hard ones. It therefore learns a
  correction to the student's own confidence (``judge.prior = max_softmax``), reads an 8-d
  view of the embeddings (32 dimensions let it fit the classes of its few hundred samples)
  and is trained on 5 cross-fitting folds (fold models closer to the deployed student).
"""

from __future__ import annotations

from kcm.config import KCMConfig, with_overrides
from kcm.data.batch import Task
from kcm.features import LLM_BACKENDS, features_kind

#: the refitted (encoder) student's recipe: trained anew on the whole memory each cycle; the
#: bench's peers use it too, so kcm and peers are compared on the same student
REFIT_LR, REFIT_EPOCHS = 0.05, 20

#: ε for an LLM teacher: the small model answers where C_x > 0.4
LLM_EPSILON = 0.4


def is_llm(cfg: KCMConfig, task: Task) -> bool:
    """Whether the large model is an LLM endpoint (or a recording of one)."""
    from kcm.models.large import resolve_backend

    return resolve_backend(cfg, task) in LLM_BACKENDS


def resolved(cfg: KCMConfig, task: Task) -> KCMConfig:
    """``cfg`` with every ``auto`` / ``null`` setting that kcm decides made concrete."""
    kind = features_kind(task, cfg)
    encoder = kind == "encoder"
    llm = is_llm(cfg, task)
    s, d, r = cfg.small, cfg.distill, cfg.routing
    out: dict[str, object] = {}
    if s.refit is None:
        out["small.refit"] = encoder
    small_refit = encoder if s.refit is None else s.refit
    if s.lr is None:
        out["small.lr"] = REFIT_LR if small_refit else 5e-3
    if s.epochs is None:
        out["small.epochs"] = REFIT_EPOCHS if small_refit else 8
    if d.w_js is None:
        out["distill.w_js"] = 0.0 if llm else 0.5
    if d.temperature is None:
        out["distill.temperature"] = 1.0 if llm else 2.0
    if r.max_loss == "auto":
        out["routing.max_loss"] = None
    if r.epsilon == "auto":
        out["routing.epsilon"] = LLM_EPSILON if llm else 0.98
    if cfg.features.kind == "auto" and kind in ("tfidf", "encoder"):
        out["features.kind"] = kind
    if cfg.features.judge_dim is None:
        out["features.judge_dim"] = 8 if encoder else 32
    if cfg.judge.folds is None:
        out["judge.folds"] = 5 if encoder else 3
    if cfg.judge.prior == "auto":
        out["judge.prior"] = "max_softmax" if encoder else "none"
    return with_overrides(cfg, out) if out else cfg
