"""Batch validation with Great Expectations (GX Core 1.x).

With a project folder (the workspace's ``gx/``, ``validation.data_docs``) validation runs as
GX's docs show it: a file data context holding the suite as reviewable JSON
(``gx/expectations/kcm_batch_suite.json``), a validation definition and a Checkpoint whose
action builds the Data Docs (``gx/uncommitted/data_docs/local_site/index.html``, one page per
batch, named after it); without one, an ephemeral context.

The suite is built in code from the task (``batch_suite``): required columns and row count
are table-level checks (a failure quarantines the batch); non-null inputs, text lengths,
feature ranges, labels in the label set and unique ids are row-level checks whose failing rows
are counted, and dropped or quarantined according to ``validation.on_bad_rows`` and
``validation.max_bad_fraction``. This module is the only importer of great_expectations.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kcm.config import ValidateConfig
from kcm.data.batch import OUT_OF_SCOPE_LABEL, Task

log = logging.getLogger(__name__)

TABLE_LEVEL = {"expect_table_columns_to_match_set", "expect_table_row_count_to_be_between"}


@dataclass
class ValidationReport:
    """The outcome for one batch; ``to_dict`` is the JSON written next to a quarantined file."""

    batch: str
    success: bool
    decision: str  # "accept" | "drop_rows" | "quarantine"
    reason: str
    n_rows: int
    bad_rows: list[int] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    new_classes: list[str] = field(default_factory=list)
    data_docs: str | None = None  # the Data Docs page of this validation (a GX project)
    gx_result: dict[str, Any] | None = None  # GX's own validation result, as JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "success": self.success,
            "decision": self.decision,
            "reason": self.reason,
            "n_rows": self.n_rows,
            "n_bad_rows": len(self.bad_rows),
            "bad_rows": self.bad_rows[:1000],
            "failures": self.failures,
            "statistics": self.statistics,
            "new_classes": self.new_classes,
            "data_docs": self.data_docs,
        }

    def summary(self) -> str:
        """A readable Markdown summary."""
        lines = [
            f"# Validation of `{self.batch}`",
            "",
            f"- decision: **{self.decision}**",
            f"- reason: {self.reason}",
            f"- rows: {self.n_rows}, rows failing row-level checks: {len(self.bad_rows)}",
        ]
        if self.new_classes:
            lines.append(f"- labels outside the label set: {', '.join(self.new_classes[:20])}")
        if self.failures:
            lines += ["", "| expectation | column | unexpected | examples |", "|---|---|---|---|"]
            for f in self.failures:
                ex = ", ".join(
                    repr(v[:40] + ("..." if len(v) > 40 else "")) for v in f.get("examples", [])[:3]
                )
                lines.append(
                    f"| {f['expectation']} | {f.get('column') or ''} | "
                    f"{f.get('unexpected_count', '')} | {ex} |"
                )
        return "\n".join(lines) + "\n"


def unreadable(batch: str, error: str) -> ValidationReport:
    """The report for a file that could not even be read as a table."""
    return ValidationReport(
        batch=batch,
        success=False,
        decision="quarantine",
        reason=f"unreadable: {error}",
        n_rows=0,
        failures=[{"expectation": "readable_as_csv_or_parquet", "error": error}],
    )


def batch_suite(
    task: Task, cfg: ValidateConfig, feature_ranges: dict[str, tuple[float, float]] | None = None
) -> list[Any]:
    """The expectations every batch of ``task`` must meet (GX expectation objects)."""
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows, max_value=cfg.max_rows)
    ]
    exps.append(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*task.input_cols, task.label_col], exact_match=False
        )
    )
    if task.kind == "text":
        assert task.text_col is not None
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=task.text_col))
        exps.append(
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=task.text_col, min_value=cfg.min_text_chars, max_value=cfg.max_text_chars
            )
        )
    else:
        # a column that was constant in the reference data gets the span of all features
        overall = (
            max(h for _, h in feature_ranges.values())
            - min(lo for lo, _ in feature_ranges.values())
            if feature_ranges
            else 0.0
        )
        for col in task.feature_cols or ():
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
            if feature_ranges and col in feature_ranges:
                lo, hi = feature_ranges[col]
                span = max(hi - lo, overall, 1e-6)
                exps.append(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=col,
                        min_value=lo - cfg.feature_margin * span,
                        max_value=hi + cfg.feature_margin * span,
                    )
                )
    if not cfg.allow_new_classes:
        exps.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=task.label_col, value_set=[*task.label_names, OUT_OF_SCOPE_LABEL]
            )
        )
    return exps


def _prepare(df: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Normalise types so the expectations see what kcm will read (labels as strings)."""
    out = df.copy()
    if task.label_col in out.columns:
        lab = out[task.label_col]
        out[task.label_col] = lab.where(lab.isna(), lab.astype(str)).astype(object)
    if task.kind == "text" and task.text_col in out.columns:
        txt = out[task.text_col]
        out[task.text_col] = txt.where(txt.isna(), txt.astype(str))
    return out


def _numbers(
    data: pd.DataFrame, task: Task
) -> tuple[pd.DataFrame, list[tuple[dict[str, Any], list[int]]]]:
    """Numeric feature columns as numbers; each cell that is not one becomes null (so the
    suite sees it) and is reported with its value: a batch the route step could not read
    must fail here, not there."""
    found: list[tuple[dict[str, Any], list[int]]] = []
    if task.kind != "numeric":
        return data, found
    out = data.copy()
    for col in task.feature_cols or ():
        if col not in out.columns or pd.api.types.is_numeric_dtype(out[col]):
            continue
        num = pd.to_numeric(out[col], errors="coerce")
        wrong = num.isna() & out[col].notna()
        if wrong.any():
            rows = [int(i) for i in np.flatnonzero(wrong.to_numpy())]
            found.append(
                (
                    {
                        "expectation": "expect_column_values_to_be_numbers",
                        "column": col,
                        "unexpected_count": len(rows),
                        "examples": [str(v) for v in out[col][wrong].head(5)],
                    },
                    rows,
                )
            )
        out[col] = num
    return out, found


SUITE, CHECKPOINT = "kcm_batch_suite", "kcm_batch_checkpoint"
RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": []}


def _get_or_add(get: Any, add: Any, name: str) -> Any:
    try:
        return get(name)
    except Exception:  # GX raises a different error type per store when a name is missing
        return add(name)


def _run_suite(
    data: pd.DataFrame,
    task: Task,
    cfg: ValidateConfig,
    feature_ranges: dict[str, tuple[float, float]] | None,
    batch: str = "batch",
    project: Path | None = None,
) -> tuple[Any, str | None]:
    """GX's validation result of the batch suite on ``data``, and the Data Docs page of it
    (None without a project)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    expectations = batch_suite(task, cfg, feature_ranges)
    if task.id_col in data.columns:
        expectations.append(gxe.ExpectColumnValuesToBeUnique(column=task.id_col))
    # built in one go: adding expectations one by one re-serialises the suite each time
    suite_obj = gx.ExpectationSuite(name=SUITE, expectations=expectations)
    if project is None:
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = ctx.data_sources.add_pandas("incoming").add_dataframe_asset("batch")
        definition = asset.add_batch_definition_whole_dataframe("whole")
        suite = ctx.suites.add(suite_obj)
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name="kcm", data=definition, suite=suite)
        )
        return vd.run(batch_parameters={"dataframe": data}, result_format=RESULT_FORMAT), None
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    ctx = gx.get_context(mode="file", project_root_dir=str(project))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = _get_or_add(ctx.data_sources.get, ctx.data_sources.add_pandas, "incoming")
    asset = _get_or_add(source.get_asset, source.add_dataframe_asset, "batch")
    definition = _get_or_add(
        asset.get_batch_definition, asset.add_batch_definition_whole_dataframe, "whole"
    )
    # updated only when kcm's suite changed: GX compares expectations pairwise (seconds a batch)
    stamp = project / "gx" / "kcm_suite.sha256"
    configs = [e.configuration.to_json_dict() for e in expectations]
    digest = hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()
    try:
        if not stamp.is_file() or stamp.read_text() != digest:
            raise LookupError("the suite changed")
        checkpoint = ctx.checkpoints.get(CHECKPOINT)
    except Exception:  # changed, or an object missing from the stores: written again
        suite = ctx.suites.add_or_update(suite_obj)
        vd = ctx.validation_definitions.add_or_update(
            gx.ValidationDefinition(name="kcm_batch", data=definition, suite=suite)
        )
        checkpoint = ctx.checkpoints.add_or_update(
            gx.Checkpoint(
                name=CHECKPOINT,
                validation_definitions=[vd],
                actions=[UpdateDataDocsAction(name="update_data_docs")],
                result_format=RESULT_FORMAT,
            )
        )
        stamp.write_text(digest)
    out = checkpoint.run(batch_parameters={"dataframe": data}, run_id=RunIdentifier(run_name=batch))
    res = next(iter(out.run_results.values()))
    site = project / "gx" / "uncommitted" / "data_docs" / "local_site"
    pages = sorted((site / "validations" / SUITE / batch).glob("*/*.html"))
    return res, str(pages[-1] if pages else site / "index.html")


def _failures(res: Any) -> tuple[list[dict[str, Any]], set[int], bool]:
    """The failed expectations, the rows they name, and whether a table-level one failed."""
    failures: list[dict[str, Any]] = []
    bad: set[int] = set()
    table_failed = False
    for r in res.results:
        if r.success:
            continue
        cfg_e = r.expectation_config
        kind = cfg_e.type
        result = r.result or {}
        item: dict[str, Any] = {
            "expectation": kind,
            "column": cfg_e.kwargs.get("column"),
            "unexpected_count": result.get("unexpected_count"),
            "examples": [str(v) for v in (result.get("partial_unexpected_list") or [])[:5]],
        }
        if r.exception_info and r.exception_info.get("raised_exception"):
            item["error"] = str(r.exception_info.get("exception_message"))[:300]
        failures.append(item)
        if kind in TABLE_LEVEL or item.get("error"):
            table_failed = True
        else:
            idx = result.get("unexpected_index_list") or []
            bad.update(
                int(i) if not isinstance(i, dict) else int(next(iter(i.values()))) for i in idx
            )
    return failures, bad, table_failed


def validate_frame(
    df: pd.DataFrame,
    task: Task,
    cfg: ValidateConfig,
    batch: str,
    feature_ranges: dict[str, tuple[float, float]] | None = None,
    project: str | Path | None = None,
) -> ValidationReport:
    """Run the suite on ``df`` and decide: accept, drop the bad rows, or quarantine.
    ``project``: a folder for the GX project (suite, checkpoint, Data Docs); None: ephemeral."""
    data = _prepare(df, task).reset_index(drop=True)
    data, not_numbers = _numbers(data, task)
    res, docs = _run_suite(
        data, task, cfg, feature_ranges, batch, None if project is None else Path(project)
    )
    report = _decide(df, data, not_numbers, res, task, cfg, batch)
    report.data_docs, report.gx_result = docs, res.to_json_dict()
    return report


def _decide(
    df: pd.DataFrame,
    data: pd.DataFrame,
    not_numbers: list[tuple[dict[str, Any], list[int]]],
    res: Any,
    task: Task,
    cfg: ValidateConfig,
    batch: str,
) -> ValidationReport:
    failures, bad, table_failed = _failures(res)
    for item, rows in not_numbers:  # cells a later step could not read: named, row-level
        failures.append(item)
        bad.update(rows)
    new_classes: list[str] = []
    if task.label_col in data.columns:
        labels = data[task.label_col].dropna().astype(str)
        new_classes = sorted(set(labels) - {*task.label_names, OUT_OF_SCOPE_LABEL})
    stats = dict(res.statistics)
    n = len(data)
    if table_failed:
        names = ", ".join(
            f"{f['expectation']}({f.get('column') or ''})"
            for f in failures
            if f["expectation"] in TABLE_LEVEL or f.get("error")
        )
        if n > cfg.max_rows:
            names += (
                f": {n} rows, more than validation.max_rows={cfg.max_rows}; split the file "
                "into smaller batches (or raise validation.max_rows)"
            )
        missing = [c for c in [*task.input_cols, task.label_col] if c not in df.columns]
        if missing:  # only what is missing, once (not every expected column)
            names = f"missing column(s) {missing}: add them to the batch (labels may be empty)"
        return ValidationReport(
            batch,
            False,
            "quarantine",
            f"table-level check failed: {names}",
            n,
            sorted(bad),
            failures,
            stats,
            new_classes,
        )
    if not bad:
        return ValidationReport(
            batch, True, "accept", "all expectations met", n, [], failures, stats, new_classes
        )
    share = len(bad) / max(n, 1)
    if cfg.on_bad_rows == "drop" and share <= cfg.max_bad_fraction and len(bad) < n:
        return ValidationReport(
            batch,
            False,
            "drop_rows",
            f"{len(bad)} of {n} rows ({share:.1%}) fail row-level checks, within "
            f"the tolerance {cfg.max_bad_fraction:.1%}: dropped and reported",
            n,
            sorted(bad),
            failures,
            stats,
            new_classes,
        )
    why = f"{len(bad)} of {n} rows ({share:.1%}) fail row-level checks" + (
        f", above the tolerance {cfg.max_bad_fraction:.1%}"
        if cfg.on_bad_rows == "drop"
        else " and validation.on_bad_rows is 'quarantine'"
    )
    return ValidationReport(
        batch, False, "quarantine", why, n, sorted(bad), failures, stats, new_classes
    )
