"""Answering a batch through the workspace: route, call the large model in chunks, assemble.

The three steps are ``CollaborationSystem.route``, ``kcm.answers.ask_large`` and
``kcm.answers.merge`` (what ``CollaborationSystem.predict`` runs in one go), with their results
written to the batch's run folder in between, so chunks can run as separate tasks, in threads
or processes, and a crashed cycle resumes. ``route.npz`` records the hint actually sent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kcm.answers import Predictions, Routed, ask_large, merge
from kcm.config import KCMConfig
from kcm.data.batch import Batch
from kcm.errors import KCMError
from kcm.models.large import LargeOutput
from kcm.steps.systems import champion, paying
from kcm.system import CollaborationSystem
from kcm.workspace import Workspace, atomic_write_text

log = logging.getLogger(__name__)


def reference_path(ws: Workspace, version: int) -> Path:
    """Version ``version``'s C_x on the traffic view (written by evaluate): drift's reference."""
    return ws.eval_dir / f"confidence-v{version:04d}.npy"


def batch_drift(cfg: KCMConfig, ws: Workspace, confidence: np.ndarray) -> dict[str, Any] | None:
    """The batch's drift score against the answering version's reference (None before any
    version was evaluated)."""
    from kcm.evaluation.drift import drift_score

    version = ws.load_ledger().answering_version
    path = reference_path(ws, version) if version is not None else None
    if path is None or not path.is_file() or not len(confidence):
        return None
    return drift_score(confidence, np.load(path, allow_pickle=False), cfg.eval.drift_alarm)


def route(cfg: KCMConfig, ws: Workspace, name: str) -> dict[str, Any]:
    """Score the batch with the champion (judge and small model), decide which samples go to
    the large model and with which hint. Writes route.npz; returns the chunks for call_large."""
    system = champion(ws, cfg)
    batch = ws.load_batch(name)
    r = system.route(batch)
    for stale in ws.run_dir(name).glob("large-*.npz"):  # a resumed cycle may route otherwise
        stale.unlink()
    arrays: dict[str, Any] = {
        "to_large": r.to_large,
        "confidence": r.confidence,
        "small_proba": r.small_proba,
        "epsilon": np.array(r.epsilon),
        "trained": np.array(system.trained_),
    }
    if r.judge_proba is not None:
        arrays["judge_proba"] = r.judge_proba
    if r.hints is not None:
        arrays["hints"] = r.hints
    np.savez_compressed(ws.run_dir(name) / "route.npz", **arrays)
    drift = batch_drift(cfg, ws, r.confidence)
    atomic_write_text(ws.run_dir(name) / "drift.json", json.dumps(drift))
    if drift and drift["alarm"]:
        log.warning("batch %s drifts: score %.2f > %.2f", name, drift["score"], drift["bound"])
    n_large = int(r.to_large.sum())
    size = cfg.flow.large_chunk_size
    chunks = [[s, min(s + size, n_large)] for s in range(0, n_large, size)]
    large = system.large
    return {
        "batch": name,
        "n": len(batch),
        "n_large": n_large,
        "epsilon": r.epsilon,
        "chunks": chunks,
        "drift": drift,
        # what sending every query to the large model (no hint) would cost: savings' measure
        "large_only_cost": 0.0
        if large.price.free
        else float(sum(large.expected_cost(x) for x in batch.inputs)),
        "currency": large.price.currency,
    }


def call_large(cfg: KCMConfig, ws: Workspace, name: str, start: int, end: int) -> dict[str, Any]:
    """Ask the large model about hard samples [start, end) of the batch with the hints route
    recorded. Answers are cached as they arrive; the chunk's outputs go to large-<start>.npz."""
    with np.load(ws.run_dir(name) / "route.npz", allow_pickle=False) as r:
        idx = np.flatnonzero(r["to_large"])[start:end]
        hints = r["hints"][idx] if "hints" in r.files else None
    batch = ws.load_batch(name)
    large = paying(ws, cfg, "serve")  # this chunk's own ledger (its cost, exactly), the caps
    out = ask_large(large, batch, idx, hints)
    np.savez_compressed(
        ws.run_dir(name) / f"large-{start:06d}.npz",
        idx=idx,
        raw=out.raw,
        answer=out.answer,
        ok=out.ok,
        keys=out.keys if out.keys is not None else np.full(len(idx), "", dtype=str),
        errors=np.array(out.errors if out.errors is not None else np.full(len(idx), ""), dtype=str),
        out_of_scope=out.oos(),
        cost=out.cost if out.cost is not None else np.zeros(len(idx)),
        refused=out.refused_mask(),
    )
    cost = large.ledger.snapshot()
    failed = list(large.ledger.failed)
    return {"batch": name, "start": start, "end": end, **cost, "errors": failed[:20]}


def routed_of(ws: Workspace, name: str, system: CollaborationSystem, batch: Batch) -> Routed:
    """The routing decision recorded by ``route``."""
    with np.load(ws.run_dir(name) / "route.npz", allow_pickle=False) as r:
        return Routed(
            features=system.featurize(batch),
            small_proba=r["small_proba"],
            confidence=r["confidence"],
            judge_proba=r["judge_proba"] if "judge_proba" in r.files else None,
            to_large=r["to_large"],
            epsilon=float(r["epsilon"]),
            hints=r["hints"] if "hints" in r.files else None,
        )


def _column(parts: list[Any], key: str, dtype: type) -> np.ndarray:
    """A per-sample column of the chunks (zeros for a chunk written before it existed)."""
    return np.concatenate(
        [p[key] if key in p.files else np.zeros(len(p["idx"]), dtype) for p in parts]
    ).astype(dtype)


def assemble(ws: Workspace, name: str, system: CollaborationSystem, batch: Batch) -> Predictions:
    """The batch's answers before learning: ``merge`` of the recorded routing and every
    chunk's large-model output (``system`` featurizes the batch; the featurizer is frozen)."""
    routed = routed_of(ws, name, system, batch)
    parts = [np.load(f, allow_pickle=False) for f in sorted(ws.run_dir(name).glob("large-*.npz"))]
    try:
        idx = np.concatenate([p["idx"] for p in parts]) if parts else np.zeros(0, np.int64)
        routed_idx = np.flatnonzero(routed.to_large)
        missing = np.setdiff1d(routed_idx, idx)
        extra = np.setdiff1d(idx, routed_idx)
        if len(extra) or len(idx) != len(np.unique(idx)):
            raise KCMError(
                f"batch {name}: large-model chunks answer samples the recorded routing did not "
                "send (a stale chunk): run route again, then call_large for every chunk"
            )
        if len(missing):
            raise KCMError(
                f"batch {name}: {len(missing)} hard samples have no large-model "
                f"answer yet: run call_large for every chunk before learning"
            )
        if not parts:
            return merge(routed, None)
        out = LargeOutput(
            raw=np.concatenate([p["raw"] for p in parts]),
            answer=np.concatenate([p["answer"] for p in parts]),
            ok=np.concatenate([p["ok"] for p in parts]),
            keys=np.concatenate([p["keys"] for p in parts]),
            errors=np.concatenate(
                [p["errors"] if "errors" in p.files else np.full(len(p["idx"]), "") for p in parts]
            ),
            out_of_scope=_column(parts, "out_of_scope", bool),
            cost=_column(parts, "cost", float),
            refused=_column(parts, "refused", bool),
        )
    finally:
        for p in parts:
            p.close()
    return merge(routed, out, idx)
