"""Creating the workspace, feeding a stream into an inbox, and ingesting the inbox."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kcm.config import KCMConfig
from kcm.data.stream import DataBundle, build_bundle
from kcm.errors import EnvironmentFault
from kcm.failpoints import reach
from kcm.models.large import make_large_model
from kcm.persist import check_built, save_system
from kcm.steps.systems import now
from kcm.system import CollaborationSystem
from kcm.workspace import BatchRecord, Ledger, Workspace, atomic_write_bytes, atomic_write_text

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
    ws.save_ledger(Ledger(challenger=0, created_at=now(), dataset=cfg.data.dataset))
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


def ingest(ws: Workspace, cfg: KCMConfig | None = None) -> dict[str, list[str]]:
    """Move new files from the inbox to data/batches/ under stable names
    (``<seq>-<stem>-<sha8><suffix>``) and, with ``dvc.enabled``, version each with DVC
    (``dvc add`` + push to the remote; the md5 goes into the ledger). A file whose content was
    seen before is skipped with a log line and kept under data/batches/duplicates/. Returns
    new, skipped and pending names.

    A transaction per file: the copy is written (fsync, rename), then the ledger records it
    as pending (fsync, rename), and only then is the inbox file removed; DVC versions it
    last. A crash at any point leaves the batch in the inbox or pending in the ledger, never
    neither: an inbox file the ledger already holds from the same source is the tail of an
    interrupted move and is only removed; a pending batch not yet versioned is versioned by
    the next run. Sequence numbers count the ledger's batches, which are never removed."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(ws.inbox)
    ledger = ws.load_ledger()
    known = {v.sha256: k for k, v in ledger.batches.items()}
    new, skipped = [], []
    if not fs.exists(root):
        fs.makedirs(root, exist_ok=True)
    dvc_on = cfg is not None and cfg.dvc.enabled
    if dvc_on:
        _version_unversioned(ws, ledger, cfg)
    entries = sorted(fs.ls(root, detail=True), key=lambda e: e["name"])
    for e in entries:
        src = e["name"]
        base = src.rstrip("/").rsplit("/", 1)[-1]
        if base.startswith(".") or base.endswith(".tmp"):
            continue
        if e.get("type") != "file":
            log.warning("skipping inbox entry %s: not a regular file (%s)", base, e.get("type"))
            continue
        data = fs.cat_file(src)
        sha = hashlib.sha256(data).hexdigest()
        if sha in known:
            if ledger.batches[known[sha]].source == src:
                fs.rm(src)  # a move interrupted after its ledger commit: finish it
                log.info(
                    "%s: already recorded as batch %s; removed from the inbox", base, known[sha]
                )
                continue
            dup = ws.batches / "duplicates" / f"{now().replace(':', '')}-{base}"
            atomic_write_bytes(dup, data)
            fs.rm(src)
            log.info(
                "skipping %s: same content as batch %s, already ingested (kept as %s)",
                base,
                known[sha],
                dup.name,
            )
            skipped.append(base)
            continue
        stem, dot, suffix = base.rpartition(".")
        stem, suffix = (stem, "." + suffix) if dot else (base, "")
        stable = f"{len(ledger.order):04d}-{stem}-{sha[:8]}{suffix}"
        dest = ws.batches / stable
        atomic_write_bytes(dest, data)
        reach("ingest:copied")
        ledger.batches[stable] = BatchRecord(sha256=sha, source=src, ingested_at=now())
        ledger.order.append(stable)
        ws.save_ledger(ledger)  # the commit point: from here the batch is pending
        reach("ingest:recorded")
        fs.rm(src)
        known[sha] = stable
        new.append(stable)
        log.info("ingested %s as %s", base, stable)
        if dvc_on:
            _version(ws, ledger, stable, cfg)
    return {"new": new, "skipped": skipped, "pending": ledger.pending}


def _version(ws: Workspace, ledger: Ledger, name: str, cfg: KCMConfig) -> None:
    """Version a recorded batch with DVC. DVC refusing it (git ignores its ``.dvc`` file, the
    remote is down) is the environment's fault, never the batch's: one line naming the file
    and the fix, and the batch stays pending for the next run to version."""
    from kcm.adapters.dvc_store import version_file

    try:
        update = version_file(ws.root, ws.batches / name, cfg.dvc.remote, cfg.dvc.remote_name)
    except EnvironmentFault as err:
        raise EnvironmentFault(
            f"ingest: {err} (batch {name} is kept, pending: the next run versions it)"
        ) from err
    update["dvc_remote_url"] = ws.rel(update["dvc_remote_url"])
    ledger.batches[name] = ledger.batches[name].model_copy(update=update)
    ws.save_ledger(ledger)


def _version_unversioned(ws: Workspace, ledger: Ledger, cfg: KCMConfig) -> None:
    """Batches a crashed run recorded but did not get to version with DVC."""
    for name in ledger.order:
        rec = ledger.batches[name]
        if rec.dvc_md5 is None and (ws.batches / name).is_file():
            log.info("versioning %s with DVC (its ingest stopped before)", name)
            _version(ws, ledger, name, cfg)
