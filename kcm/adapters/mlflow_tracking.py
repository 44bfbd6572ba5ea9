"""MLflow tracking of the continual loop: one parent run per continual invocation carrying
the run's settings and, stepped by cycle, every cycle's figures (so the UI draws accuracy,
large-call rate, calls and forgetting over cycles); one nested run per cycle with its batch
logged as an MLflow dataset input (DVC path and md5 as source and digest), its artifacts, and
the system logged as a pyfunc LoggedModel that carries the cycle's metrics and is registered
with a description of what it is (batch, gate decision, key figures).

Registry operations (aliases, promote, rollback, lineage) live in ``mlflow_registry``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from kcm.adapters.mlflow_pyfunc import log_system
from kcm.adapters.mlflow_registry import code_commit, drop_version, setup
from kcm.config import flatten
from kcm.evaluation.gate import Decision


def _params(cfg: Any) -> dict[str, str]:
    from kcm.config import config_to_dict

    return {k: ("" if v is None else str(v))[:500] for k, v in flatten(config_to_dict(cfg)).items()}


def start_parent(
    workdir: str | Path,
    experiment: str,
    configured: str | None = None,
    name: str = "kcm-continual",
    cfg: Any = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A parent run for one continual invocation, with the run's settings as params; cycles
    are nested under it and their figures are also logged on it, stepped by cycle."""
    setup(workdir, experiment, configured)
    c = MlflowClient()
    run = c.create_run(
        mlflow.get_experiment_by_name(experiment).experiment_id,
        run_name=name,
        tags={
            "kcm.kind": "continual",
            "kcm.workspace": str(Path(workdir).resolve()),
            **(tags or {}),
        },
    )
    if cfg is not None:
        params = [Param(k, v) for k, v in _params(cfg).items()]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            c.log_batch(run.info.run_id, params=params[i : i + 100])
    return str(run.info.run_id)


def log_series(run_id: str, report: dict[str, Any]) -> None:
    """The cycle's figures on the parent run at step = cycle: one point per cycle."""
    step, now = int(report.get("cycle", 0)), int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v in _metrics(report).items()]
    c = MlflowClient()
    for i in range(0, len(metrics), 500):
        c.log_batch(run_id, metrics=metrics[i : i + 500])


def end_parent(run_id: str, failed: bool = False) -> None:
    MlflowClient().set_terminated(run_id, "FAILED" if failed else "FINISHED")


_VIEW_KEYS = ("accuracy", "accuracy_many", "accuracy_medium", "accuracy_few", "large_call_rate")
_OOS_KEYS = ("out_of_scope", "oos_recall", "oos_confident_wrong")


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in (*_VIEW_KEYS, *_OOS_KEYS, "large_calls", "judge_auroc", "small_accuracy", "seconds"):
        if report.get(key) is not None:
            out[f"batch_{key}"] = float(report[key])
    for key in _OOS_KEYS:  # the held-back classes' test queries (data.out_of_scope_classes)
        v = (report.get("out_of_scope_view") or {}).get(key)
        if v is not None:
            out[f"oos_view_{key}"] = float(v)
    for view in ("traffic", "balanced"):
        for key in (*_VIEW_KEYS, "judge_auroc"):
            v = report.get(view, {}).get(key)
            if v is not None:
                out[f"{view}_{key}"] = float(v)
        for key, v in report.get(view, {}).get("baselines", {}).items():
            if v is not None:
                out[f"{view}_baseline_{key}"] = float(v)
    for key, v in (report.get("forgetting") or {}).items():
        if v is not None:
            out[key] = float(v)
    if report.get("drift"):
        out["drift_score"] = float(report["drift"]["score"])
    for key, v in (report.get("large_ledger") or {}).items():
        if isinstance(v, (int, float)):
            out[f"large_{key}"] = float(v)
    for key, v in (report.get("money") or {}).items():  # spent, saved, cumulative_*, per_1000
        if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "n":
            out[f"money_{key}"] = float(v)
    return out


def _run_tags(
    ws: Any,
    name: str,
    version: int,
    decision: Decision,
    parent_run_id: str | None,
    answers: str | None = None,
) -> dict[str, str]:
    record = ws.load_ledger().batches.get(name)
    tags = {
        "kcm.batch": name,
        "kcm.batch_sha256": record.sha256 if record else "",
        "kcm.system_version": str(version),
        "kcm.workspace": str(ws.root),
        "kcm.workspace_id": ws.load_ledger().workspace_id,
        "kcm.git_commit": code_commit() or "unknown",
        "kcm.gate": "promote" if decision.promote else "refuse",
    }
    if record is not None and record.dvc_md5:
        tags["kcm.batch_dvc_md5"] = record.dvc_md5
    if answers:
        tags["kcm.answers"] = answers  # the batch's delivered answers (kcm.steps.deliver)
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return tags


def _per_class_csv(meta: dict[str, Any], report: dict[str, Any]) -> str:
    names = meta["task"]["label_names"]
    return pd.DataFrame(
        {
            "class": names,
            "group": [meta["groups"].get(str(i), "") for i in range(len(names))],
            "accuracy": report.get("per_class", []) or [None] * len(names),
        }
    ).to_csv(index=False)


def track_cycle(
    cfg: Any,
    ws: Any,
    name: str,
    version: int,
    report: dict[str, Any],
    decision: Decision,
    lineage: dict[str, Any],
    parent_run_id: str | None = None,
    system: Any = None,
    *,
    names: dict[str, str],
) -> dict[str, Any]:
    """One MLflow run for the cycle: config as params, the cycle's metrics (step = cycle),
    lineage tags, report and per-class artifacts; the system logged as a pyfunc model and
    registered. No alias moves here: ``register`` moves them after the ledger has committed
    the cycle (``set_aliases``), so an alias never points at an uncommitted version. A
    failure after registration removes the version. ``names``: the project's
    (``kcm.project.names``: project, model, experiment)."""
    reg = cfg.registry
    model = names["model"]
    setup(ws.root, names["experiment"], reg.tracking_uri)
    tags = _run_tags(ws, name, version, decision, parent_run_id, report.get("answers"))
    tags["kcm.project"] = names["project"]
    task = ws.task()
    example = ws.view("traffic", task).to_frame(task, with_labels=False).head(3)
    step = int(report.get("cycle", 0))
    metrics = _metrics(report)
    with mlflow.start_run(run_name=f"cycle-{step}-{name}", tags=tags) as run:
        mlflow.log_params(_params(cfg))
        log_batch_input(ws, name)
        mlflow.log_dict({k: v for k, v in report.items() if k != "matrix_state"}, "report.json")
        mlflow.log_dict(lineage, "lineage.json")
        mlflow.log_dict({"gate": decision.promote, "reasons": decision.reasons}, "gate.json")
        mlflow.log_text(_per_class_csv(ws.meta(), report), "per_class_accuracy.csv")
        for png in report.get("plots", []):
            mlflow.log_artifact(str(ws.path(png)), artifact_path="plots")
        info = log_system(ws.system_dir(version), example, model, system)
        mv = info.registered_model_version
        try:
            # the run's metrics, linked to its LoggedModel (one call: one point per cycle)
            mlflow.log_metrics(metrics, step=step, model_id=info.model_id)
            c = MlflowClient()
            c.update_model_version(
                model, str(mv), description=version_description(name, report, decision)
            )
            if not c.get_registered_model(model).description:
                c.update_registered_model(model, description=MODEL_DESCRIPTION)
            c.set_model_version_tag(model, str(mv), "kcm.system_version", str(version))
            c.set_model_version_tag(model, str(mv), "kcm.batch", name)
            c.set_model_version_tag(model, str(mv), "kcm.workspace", str(ws.root))
            c.set_model_version_tag(model, str(mv), "kcm.project", names["project"])
            c.set_model_version_tag(
                model, str(mv), "kcm.workspace_id", ws.load_ledger().workspace_id
            )
        except BaseException:
            drop_version(model, mv)
            raise
    if parent_run_id:
        log_series(parent_run_id, report)
    return {
        "run_id": run.info.run_id,
        "model_version": int(mv),
        "model_name": model,
        "promoted": decision.promote,
    }


MODEL_DESCRIPTION = (
    "A kcm collaboration system: a small model and a judge in front of a large model. "
    "predict(df) answers each row with the routing applied (answer, confidence C_x, "
    "answered_by). One version per processed batch; alias `champion` is what serves, "
    "`challenger` the latest. Each version's description names its batch, the promotion "
    "gate's decision and its figures; its tags carry the lineage (kcm.batch, "
    "kcm.system_version, kcm.workspace_id)."
)


def version_description(name: str, report: dict[str, Any], decision: Decision) -> str:
    t, b = report.get("traffic") or {}, report.get("balanced") or {}

    def f(x: Any) -> str:
        return "n/a" if x is None else f"{float(x):.3f}"

    gate = "promoted to champion" if decision.promote else "refused (champion kept)"
    lines = [
        f"Learned from batch {name} (cycle {report.get('cycle', 0)}): {gate}.",
        f"Traffic accuracy {f(t.get('accuracy'))} at large-call rate "
        f"{f(t.get('large_call_rate'))}; balanced {f(b.get('accuracy'))}, Few "
        f"{f(b.get('accuracy_few'))}; large model alone {f((t.get('baselines') or {}).get('large_only'))}.",
        f"On the batch as answered: accuracy {f(report.get('accuracy'))}, "
        f"{report.get('large_calls', 0)} of {report.get('n', 0)} sent to the large model.",
        "Gate: " + "; ".join(decision.reasons),
    ]
    return "\n".join(lines)


def log_batch_input(ws: Any, name: str) -> None:
    """The cycle's batch as an MLflow dataset input: its file as source, the DVC md5 (else
    its sha256) as digest, the DVC file and remote as tags."""
    record = ws.load_ledger().batches.get(name)
    path = ws.batches / name
    if record is None or not path.is_file():
        return
    task = ws.task()
    df = ws.load_batch(name, task).to_frame(task, with_labels=True)
    label = task.label_col if task.label_col in df.columns else None
    digest = (record.dvc_md5 or record.sha256 or "")[:36] or None
    ds = mlflow.data.from_pandas(df, source=str(path), name=name, targets=label, digest=digest)
    tags = {"kcm.batch": name}
    if record.dvc_file:
        tags.update(dvc_file=record.dvc_file, dvc_md5=record.dvc_md5 or "")
        tags["dvc_remote"] = str(record.dvc_remote_url or "")
    mlflow.log_input(ds, context="cycle", tags=tags)
