"""Validating an ingested batch with Great Expectations, and quarantining a bad one."""

from __future__ import annotations

import json
import logging
import shutil
from typing import Any

import pandas as pd

from kcm.config import KCMConfig
from kcm.data.batch import OUT_OF_SCOPE_LABEL
from kcm.data.sources import read_table
from kcm.errors import DataError
from kcm.steps.systems import now
from kcm.workspace import Workspace, atomic_write_text

log = logging.getLogger(__name__)
BATCH_SUFFIXES = {".csv", ".parquet", ".pq"}


def quarantine(ws: Workspace, name: str, report: Any) -> None:
    """Move the batch (and its DVC record) to data/quarantine/ with its report."""
    ws.quarantine.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".dvc"):  # the batch and its DVC record stay together
        src = ws.batches / f"{name}{suffix}"
        if src.exists():
            shutil.move(str(src), ws.quarantine / f"{name}{suffix}")
    atomic_write_text(ws.quarantine / f"{name}.report.json", json.dumps(report.to_dict(), indent=1))
    atomic_write_text(ws.quarantine / f"{name}.summary.md", report.summary())
    if getattr(report, "gx_result", None):  # GX's own result, beside kcm's report
        atomic_write_text(ws.quarantine / f"{name}.gx.json", json.dumps(report.gx_result, indent=1))
    ledger = ws.load_ledger()
    ledger.batches[name] = ledger.batches[name].model_copy(
        update={"status": "quarantined", "reason": report.reason, "at": now()}
    )
    ws.save_ledger(ledger)


def record_failure(cfg: KCMConfig, ws: Workspace, name: str, error: str) -> bool:
    """Count a failed cycle of batch ``name``; at ``flow.max_attempts`` failures quarantine it
    with the error (True: it was quarantined; the loop goes on to the next batch)."""
    from kcm.adapters.expectations import ValidationReport

    ledger = ws.load_ledger()
    rec = ledger.batches[name]
    n = rec.failures + 1
    ledger.batches[name] = rec.model_copy(update={"failures": n, "last_error": error[:2000]})
    ws.save_ledger(ledger)
    if n < cfg.flow.max_attempts:
        log.error(
            "batch %s failed (%d of %d attempts): %s; it stays pending",
            name,
            n,
            cfg.flow.max_attempts,
            error,
        )
        return False
    report = ValidationReport(
        name,
        False,
        "quarantine",
        f"failed {n} times after validation (flow.max_attempts={cfg.flow.max_attempts}): "
        f"{error[:500]}",
        0,
        failures=[{"expectation": "processed_without_error", "error": error[:2000]}],
    )
    quarantine(ws, name, report)
    log.error("batch %s quarantined after %d failed attempts: %s", name, n, error)
    return True


def _keep_dropped_rows(ws: Workspace, name: str, df: Any, report: Any) -> None:
    ws.quarantine.mkdir(parents=True, exist_ok=True)
    df.iloc[report.bad_rows].to_csv(ws.quarantine / f"{name}.dropped.csv", index=False)
    atomic_write_text(
        ws.quarantine / f"{name}.dropped.report.json", json.dumps(report.to_dict(), indent=1)
    )
    atomic_write_text(ws.quarantine / f"{name}.dropped.summary.md", report.summary())
    log.warning("batch %s: %s", name, report.reason)


def validate(cfg: KCMConfig, ws: Workspace, name: str) -> dict[str, Any]:
    """Validate one ingested batch with Great Expectations. A failing batch is moved to
    data/quarantine/ with its report (JSON and Markdown); bad rows within the tolerance are
    dropped and reported. Writes the accepted rows for the next steps."""
    from kcm.adapters.expectations import unreadable, validate_frame

    task = ws.task()
    path = ws.batches / name
    df = None
    if path.suffix.lower() not in BATCH_SUFFIXES:
        report = unreadable(
            name,
            f"'{path.suffix or 'no suffix'}' is not a batch format: send .csv or .parquet files",
        )
    else:
        try:
            df = read_table(path, str_cols=(task.label_col, task.eval_col))
        except DataError as err:
            report = unreadable(name, str(err))
        else:
            ranges = ws.meta().get("feature_ranges")
            report = validate_frame(
                df,
                task,
                cfg.validation,
                name,
                {k: tuple(v) for k, v in ranges.items()} if ranges else None,
                project=ws.root if cfg.validation.data_docs else None,
            )
    if report.decision == "quarantine" or df is None:
        quarantine(ws, name, report)
        log.warning("batch %s quarantined: %s", name, report.reason)
        return {
            "ok": False,
            "batch": name,
            "reason": report.reason,
            "report": str(ws.quarantine / f"{name}.report.json"),
            "data_docs": report.data_docs,
        }
    run = ws.run_dir(name)
    run.mkdir(parents=True, exist_ok=True)
    clean = df.drop(index=df.index[report.bad_rows]) if report.bad_rows else df
    if report.bad_rows:
        _keep_dropped_rows(ws, name, df, report)
    if report.new_classes:  # allowed by config: keep the rows, without their unknown label
        lab = clean[task.label_col]
        known = lab.isin([*task.label_names, OUT_OF_SCOPE_LABEL])
        clean = clean.assign(**{task.label_col: lab.where(known, None)})
        log.warning(
            "batch %s: labels outside the label set kept as unlabeled rows: %s",
            name,
            report.new_classes[:10],
        )
    if task.kind == "numeric":  # what is left is numbers: store them as numbers
        cols = [c for c in task.feature_cols or () if c in clean.columns]
        clean = clean.assign(**{c: pd.to_numeric(clean[c]) for c in cols})
    clean.reset_index(drop=True).to_parquet(run / "clean.parquet", index=False)
    atomic_write_text(run / "validation.json", json.dumps(report.to_dict(), indent=1))
    return {
        "ok": True,
        "batch": name,
        "n_rows": len(clean),
        "n_dropped": len(report.bad_rows),
        "decision": report.decision,
        "data_docs": report.data_docs,
    }
