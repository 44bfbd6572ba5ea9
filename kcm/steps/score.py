"""score: a table answered by the workspace's champion on an engine (``kcm.scoring``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from kcm import registry
from kcm.config import KCMConfig, config_to_dict
from kcm.errors import ConfigError, KCMError
from kcm.lock import WorkspaceBusy, exclusive
from kcm.project import model_name
from kcm.scoring import ScoreJob, Scorer, job_id, prepare_output, summarize, usage
from kcm.workspace import Workspace

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv")


def score(
    cfg: KCMConfig,
    ws: Workspace,
    source: str,
    out: str,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    keep: tuple[str, ...] = (),
    fmt: str = "parquet",
    partition_rows: int = 50_000,
) -> dict[str, Any]:
    """Answer every row of ``source`` (CSV or Parquet, a path or fsspec URL) with the
    champion, on ``engine``; the answers go to the folder ``out`` as parts in the table's order
    (``part-00000.parquet`` ...), a summary in its ``_summary.json``. Returns the summary."""
    t0 = time.perf_counter()
    ws.require()
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    runner = registry.load("score.engine", engine)(address, workers)
    runner.start()  # a cluster starts while the champion is looked up
    try:
        if cfg.routing.target_large_rate is not None or cfg.routing.max_loss not in (None, "auto"):
            log.warning(
                "routing.target_large_rate / max_loss decide per partition: the answers depend on "
                "how the table is cut (partition_rows=%d)",
                partition_rows,
            )
        if cfg.registry.enabled:
            from kcm.steps.registry_ops import sync_champion

            try:  # the champion MLflow names (a person may have moved it), into the ledger
                with exclusive(ws.root):  # never beside a run's own ledger writes
                    sync_champion(cfg, ws)
            except WorkspaceBusy:
                log.info("a run holds %s: scoring with the champion it adopted", ws.root)
        version = ws.load_ledger().answering_version
        if version is None:
            raise KCMError(f"{ws.root} has no system to answer with yet: run `kcm continual` first")
        settings = config_to_dict(cfg)
        job = job_id(source, out, version, settings, [engine, partition_rows, list(keep), fmt])
        scorer = Scorer(str(ws.root), settings, int(version), job, tuple(keep))
        uri = None
        if cfg.registry.enabled:
            from kcm.adapters.mlflow_registry import tracking_uri

            uri = tracking_uri(ws.root, cfg.registry.tracking_uri)
        task = ScoreJob(
            source=source,
            out=out,
            scorer=scorer,
            fmt=fmt,
            partition_rows=partition_rows,
            model_uri=f"models:/{model_name(cfg, ws)}@champion" if cfg.registry.enabled else None,
            tracking_uri=uri,
        )
        with exclusive(ws.root, lock=f"scores/job-{job}.lock"):  # one process per job
            prepare_output(task, engine)
            log.info("scoring %s with system v%04d on %s (job %s)", source, version, engine, job)
            parts = runner.run(task)  # seconds: from the call, cluster start and champion included
    except BaseException:
        runner.abort()  # a cluster started for nothing is closed
        raise
    summary = {
        "job": job,
        "source": source,
        "out": out,
        "engine": engine,
        "version": int(version),
        "parts_resumed": len(task.done),  # written by an earlier run of the job (not in rows)
        **summarize(parts, time.perf_counter() - t0, usage(ws.root, job)),
    }
    import fsspec

    fs, root = fsspec.core.url_to_fs(out)
    with fs.open(f"{root.rstrip('/')}/_summary.json", "w") as fh:
        fh.write(json.dumps(summary, indent=1))
    return summary
