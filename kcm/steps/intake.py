"""Creating the workspace and feeding a stream into an inbox (``kcm.steps.inbox`` takes it in)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kcm.config import KCMConfig
from kcm.data.stream import DataBundle, build_bundle
from kcm.models.large import make_large_model
from kcm.persist import check_built, save_system
from kcm.project import project_name
from kcm.steps.systems import now
from kcm.system import CollaborationSystem
from kcm.workspace import Ledger, Workspace, atomic_write_text

log = logging.getLogger(__name__)


def bootstrap(cfg: KCMConfig, ws: Workspace, bundle: DataBundle | None = None) -> dict[str, Any]:
    """Create the workspace once: fit the large model's head and the featurizer on the
    pretraining split, save system v0000 (untrained) and the held-out evaluation views. On an
    existing workspace, check that ``cfg`` changes no setting frozen with its versions."""
    if ws.exists():
        check_built(ws.system_dir(0), cfg, str(ws.root))
        return {"created": False, "root": str(ws.root)}
    ws.make_dirs()
    t0 = time.perf_counter()
    bundle = bundle or build_bundle(cfg)
    task = bundle.task
    large = make_large_model(cfg, task, cache_dir=ws.cache_dir)
    large.fit(bundle.pretrain)
    system = CollaborationSystem(task, cfg, large).setup(bundle.pretrain, ws.cache_dir)
    if ws.system_dir(0).exists():  # a bootstrap that crashed before writing the ledger
        shutil.rmtree(ws.system_dir(0))
    save_system(system, ws.system_dir(0))
    views = [("traffic", bundle.traffic), ("balanced", bundle.test)]
    if bundle.out_of_scope is not None:
        views.append(("out_of_scope", bundle.out_of_scope))
    for name, view in views:
        view.to_frame(task).to_parquet(ws.eval_dir / f"{name}.parquet", index=False)
    ranges = None
    if task.kind == "numeric":
        x = np.asarray(bundle.pretrain.inputs, dtype=float)
        ranges = {
            c: (float(x[:, j].min()), float(x[:, j].max()))
            for j, c in enumerate(task.feature_cols or ())
        }
    meta = {
        "task": task.to_dict(),
        "groups": {str(c): g for c, g in bundle.groups.items()},
        "data": bundle.summary(),
        "dataset": cfg.data.dataset,
        "class_counts": [int(n) for n in bundle.class_counts],
        "feature_ranges": ranges,
        "large_model": large.describe(),
    }
    atomic_write_text(ws.eval_dir / "meta.json", json.dumps(meta, indent=1))
    ledger = Ledger(challenger=0, created_at=now(), dataset=cfg.data.dataset)
    ledger.project = project_name(cfg, ws)  # fixed: a moved workspace keeps its names
    ws.save_ledger(ledger)
    log.info(
        "workspace %s created in %.1fs (large model %s fitted on %d samples)",
        ws.root,
        time.perf_counter() - t0,
        large.name,
        len(bundle.pretrain),
    )
    return {"created": True, "root": str(ws.root), "seconds": time.perf_counter() - t0}


def feed(
    cfg: KCMConfig, inbox: str | Path, batches: int | None = None, bundle: DataBundle | None = None
) -> list[str]:
    """Write the configured dataset's stream batches into ``inbox`` as CSV files
    (``batch-000.csv`` ...); labels the learner may not see are left empty."""
    import fsspec

    bundle = bundle or build_bundle(cfg)
    fs, root = fsspec.core.url_to_fs(str(inbox))
    fs.makedirs(root, exist_ok=True)
    written = []
    for i, b in enumerate(bundle.stream[: batches or len(bundle.stream)]):
        path = f"{root.rstrip('/')}/batch-{i:03d}.csv"
        with fs.open(path, "w") as fh:
            b.to_frame(bundle.task).to_csv(fh, index=False)
        written.append(path)
    return written
