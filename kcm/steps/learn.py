"""Learning from a routed batch: distil into the small model, retrain the judge, save the
result as the new challenger; train the labels-only baseline alongside."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from kcm.config import KCMConfig
from kcm.models.small import SmallModel
from kcm.persist import load_small, save_small
from kcm.steps.answer import assemble
from kcm.steps.systems import challenger
from kcm.system import CollaborationSystem
from kcm.workspace import Workspace

log = logging.getLogger(__name__)


def baseline_path(ws: Workspace, version: int) -> Path:
    return ws.state / "baseline" / f"v{version:04d}.safetensors"


def load_baseline(ws: Workspace, system: CollaborationSystem, version: int) -> SmallModel:
    """The labels-only small model (``small_only``) trained alongside version ``version``."""
    return load_small(system.new_small(seed_offset=7), baseline_path(ws, version))


def drop_uncommitted(ws: Workspace, last_committed: int) -> list[int]:
    """Saved versions above the last committed one were left by a cycle that was killed before
    its commit (one run per workspace: nobody else is writing them): removed, so the saved
    systems are exactly the ledger's. Returns the versions removed."""
    import shutil

    gone = []
    for d in sorted((ws.state / "systems").glob("v[0-9]*")):
        v = int(d.name[1:])
        if d.is_dir() and v > last_committed:
            shutil.rmtree(d)
            baseline_path(ws, v).unlink(missing_ok=True)
            gone.append(v)
    if gone:
        log.info("removed version(s) %s of a cycle killed before its commit", gone)
    return gone


def learn(cfg: KCMConfig, ws: Workspace, name: str) -> dict[str, Any]:
    """Distil the routed batch into the small model and retrain the judge; save the result
    as a new version (not yet the challenger: ``commit`` makes it one). Also trains the
    labels-only baseline."""
    import torch

    from kcm.distill.losses import cross_entropy
    from kcm.persist import save_system

    ledger = ws.load_ledger()
    base_version = ledger.challenger
    assert base_version is not None
    drop_uncommitted(ws, max([int(c["version"]) for c in ledger.cycles], default=0))
    system = challenger(ws, cfg)
    batch = ws.load_batch(name)
    preds = assemble(ws, name, system, batch)
    report = system.learn(batch, preds)
    version = ws.next_version()
    save_system(system, ws.system_dir(version))
    baseline = load_baseline(ws, system, base_version)
    keep = np.flatnonzero(batch.label >= 0)
    if len(keep):
        yt = torch.from_numpy(batch.label[keep])
        baseline.partial_fit(preds.features.small[keep], lambda z, rows: cross_entropy(z, yt[rows]))
    save_small(baseline, baseline_path(ws, version))
    return {
        "batch": name,
        "version": version,
        "base_version": base_version,
        "train": report.__dict__,
    }
