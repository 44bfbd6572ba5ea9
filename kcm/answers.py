"""What a system answers: the routing decision of a batch (``Routed``), the one call to the
large model (``ask_large``) and the merge of both into the answers (``Predictions``).

``CollaborationSystem.predict`` runs route -> ask_large -> merge in one go; the workspace steps
(``kcm.steps.answer``) run the same three with their results on disk in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kcm.data.batch import OUT_OF_SCOPE, Batch
from kcm.features import Features
from kcm.models.large import LargeModel, LargeOutput

log = logging.getLogger(__name__)


@dataclass
class Routed:
    """A batch scored and routed, before any large-model call. ``hints``: the hint sent to
    the large model for each routed row (NaN rows elsewhere; None when no hint is sent)."""

    features: Features
    small_proba: np.ndarray
    confidence: np.ndarray
    judge_proba: np.ndarray | None
    to_large: np.ndarray
    epsilon: float
    hints: np.ndarray | None


@dataclass
class Predictions:
    """What the system answered for a batch, and why."""

    answer: np.ndarray  # the class answered for each sample (OUT_OF_SCOPE: none fits)
    confidence: np.ndarray
    to_large: np.ndarray
    answered_by: np.ndarray
    small_proba: np.ndarray
    large_raw: np.ndarray
    final_proba: np.ndarray
    epsilon: float
    features: Features
    judge_proba: np.ndarray | None = None
    large_failures: int = 0
    hints: np.ndarray | None = None
    large_keys: np.ndarray | None = None  # the answer-cache key of each routed row ("" else)
    large_errors: np.ndarray | None = None  # why each failed large call failed ("" else)
    cost: np.ndarray | None = None  # what each answer cost (0: the small model, a cached one)

    @property
    def large_call_rate(self) -> float:
        return float(self.to_large.mean()) if len(self.to_large) else 0.0

    @property
    def out_of_scope(self) -> np.ndarray:
        """Samples the large model answered out of scope (answer ``OUT_OF_SCOPE``)."""
        return self.answer == OUT_OF_SCOPE


def inputs_at(batch: Batch, idx: np.ndarray) -> Any:
    return (
        batch.inputs[idx]
        if isinstance(batch.inputs, np.ndarray)
        else [batch.inputs[i] for i in idx]
    )


def ask_large(
    large: LargeModel,
    batch: Batch,
    idx: np.ndarray,
    hints: np.ndarray | None,
    progress: Callable[[int], None] | None = None,
) -> LargeOutput:
    """Ask ``large`` about samples ``idx`` of ``batch`` with ``hints`` (one row per sample)."""
    return large.predict_proba(inputs_at(batch, idx), hints, progress=progress)


def merge(routed: Routed, out: LargeOutput | None, idx: np.ndarray | None = None) -> Predictions:
    """The answers: the small model's where routed small, the large model's (hinted) where it
    answered samples ``idx``, the small model's as fallback where the call failed, and
    ``OUT_OF_SCOPE`` where the large model said no class fits."""
    sp = routed.small_proba
    label = sp.argmax(axis=1)
    final = sp.copy()
    raw = np.full_like(sp, np.nan)
    answered_by = np.where(routed.to_large, "large", "small").astype(object)
    keys = np.full(len(sp), "", dtype=object)
    errors = np.full(len(sp), "", dtype=object)
    cost = np.zeros(len(sp))
    failures = 0
    if out is not None and idx is not None and len(idx):
        raw[idx] = out.raw
        ok_idx = idx[out.ok]
        final[ok_idx] = out.answer[out.ok]
        label[ok_idx] = out.answer[out.ok].argmax(axis=1)
        label[idx[out.oos()]] = OUT_OF_SCOPE
        refused = out.refused_mask()
        answered_by[idx[~out.ok]] = "small-fallback"
        answered_by[idx[refused]] = "small-budget"  # a spend cap: never sent
        keys[idx] = out.keys
        if out.errors is not None:
            errors[idx] = out.errors
        if out.cost is not None:
            cost[idx] = out.cost
        failures = int((~out.ok & ~refused).sum())
        if refused.any():
            log.warning(
                "%d large-model call(s) not sent: the spend cap is reached; the small model "
                "answered them",
                int(refused.sum()),
            )
        if failures:
            log.warning(
                "%d large-model call(s) failed; the small model answered them "
                "(see the ledger for the errors)",
                failures,
            )
    return Predictions(
        answer=label,
        confidence=routed.confidence,
        to_large=routed.to_large,
        answered_by=answered_by,
        small_proba=sp,
        large_raw=raw,
        final_proba=final,
        epsilon=routed.epsilon,
        features=routed.features,
        judge_proba=routed.judge_proba,
        large_failures=failures,
        hints=routed.hints,
        large_keys=keys,
        large_errors=errors,
        cost=cost,
    )


def teacher_labels(large: LargeModel, batch: Batch) -> np.ndarray:
    """The large model's answer to every sample of ``batch``, without a hint (-1 where the
    call failed, ``OUT_OF_SCOPE`` where no class fits): what a peer policy receives when it
    asks (``kcm.bench.online``)."""
    out = ask_large(large, batch, np.arange(len(batch)), None)
    label = np.full(len(batch), -1, dtype=np.int64)
    label[out.ok] = out.raw[out.ok].argmax(axis=1)
    label[out.oos()] = OUT_OF_SCOPE
    return label
