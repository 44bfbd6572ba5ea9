"""The ``kcm-cycle`` flow: validate → route → call large → learn → evaluate → register.

Each task calls one ``kcm.steps`` function. The large-model task retries with backoff; every
answer it buys is committed to the workspace's answer store (``state/large_cache.sqlite``,
keyed by input, hint and model) as it arrives, so a re-run never buys an answer twice and no
Prefect result cache is needed. Pure compute is not retried. A batch that fails validation
ends the flow run in a ``Quarantined`` (failed) state before any model is touched. The
Markdown of the artifacts is rendered by ``kcm.report``; this module only publishes it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NONE
from prefect.states import Failed

from flows import events
from flows.common import resolve
from kcm import report as reports
from kcm import steps
from kcm.errors import EnvironmentFault


@task(name="bootstrap", cache_policy=NONE)
def bootstrap_task(cfg: dict[str, Any]) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return steps.bootstrap(c, ws)


@task(name="ingest", cache_policy=NONE)
def ingest_task(cfg: dict[str, Any]) -> Any:
    """The inbox into data/batches/. DVC or git refusing a batch ends the task in a Failed
    state whose message is the one line naming the file and the fix (no traceback)."""
    c, ws = resolve(cfg)
    log = get_run_logger()
    try:
        out = steps.ingest(ws, c)
    except EnvironmentFault as err:  # not the batch's fault: nothing counts against it
        log.error("%s", err)
        return Failed(message=str(err))
    for name in out["skipped"]:
        log.info("skipped %s: already ingested (same content)", name)
    log.info("ingested %d new batch(es); %d pending", len(out["new"]), len(out["pending"]))
    return out


@task(name="validate", task_run_name="validate-{name}", cache_policy=NONE)
def validate_task(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return steps.validate(c, ws, name)


@task(name="route", task_run_name="route-{name}", cache_policy=NONE)
def route_task(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return steps.route(c, ws, name)


@task(
    name="call-large",
    task_run_name="call-large-{name}-{start}-{end}",
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    cache_policy=NONE,
)
def call_large_task(cfg: dict[str, Any], name: str, start: int, end: int) -> dict[str, Any]:
    c, ws = resolve(cfg)
    out = steps.call_large(c, ws, name, start, end)
    if out["failures"]:
        get_run_logger().warning(
            "%d large-model call(s) failed after retries (recorded; the small "
            "model answers them): %s",
            out["failures"],
            out["errors"][:3],
        )
    return out


@task(name="learn", task_run_name="learn-{name}", cache_policy=NONE)
def learn_task(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return steps.learn(c, ws, name)


@task(name="evaluate", task_run_name="evaluate-{name}-v{version}", cache_policy=NONE)
def evaluate_task(cfg: dict[str, Any], name: str, version: int) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return steps.evaluate(c, ws, name, version)


@task(name="register", task_run_name="register-{name}-v{version}", cache_policy=NONE)
def register_task(
    cfg: dict[str, Any],
    name: str,
    version: int,
    report: dict[str, Any],
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    c, ws = resolve(cfg)
    out = steps.register(c, ws, name, version, report, parent_run_id=parent_run_id)
    get_run_logger().info(
        "promotion gate for %s: %s (%s)",
        name,
        "promoted" if out["promoted"] else "refused",
        "; ".join(out["reasons"]),
    )
    return out


def publish(cfg: dict[str, Any], report: dict[str, Any], registered: dict[str, Any]) -> None:
    """Publish the cycle's artifacts: its table and the gate's decision, the plots (linked
    as files), and per-class accuracy. The content comes from ``kcm.report``."""
    _, ws = resolve(cfg)
    create_markdown_artifact(
        key="kcm-cycle",
        markdown=reports.cycle_markdown(report, registered),
        description=f"cycle {report['cycle']} on {report['batch']}",
    )
    if registered.get("plots"):
        create_markdown_artifact(
            key="kcm-cycle-plots",
            markdown=reports.plots_markdown(report, [str(ws.path(p)) for p in registered["plots"]]),
            description=f"plots of cycle {report['cycle']} ({ws.path(registered['plots'][0]).parent})",
        )
    create_table_artifact(
        key="kcm-per-class-accuracy",
        table=reports.per_class_table(report, ws.meta()),
        description=f"per-class accuracy (balanced view) after {report['batch']}",
    )


@flow(name="kcm-cycle", flow_run_name="cycle-{name}", log_prints=False)
def cycle_flow(cfg: dict[str, Any], name: str, parent_run_id: str | None = None) -> Any:
    """Process one ingested batch."""
    log = get_run_logger()
    t0 = time.perf_counter()
    v = validate_task(cfg, name)
    if v.get("data_docs"):  # GX's Data Docs page of this batch's validation
        create_link_artifact(
            key="kcm-data-docs",
            link=Path(v["data_docs"]).resolve().as_uri(),
            link_text=f"Data Docs: validation of {name}",
            description=f"Great Expectations validation of {name}",
        )
    if not v["ok"]:
        log.error("batch %s quarantined: %s (report: %s)", name, v["reason"], v["report"])
        c, ws = resolve(cfg)
        events.emit(c, ws, "quarantined", batch=name, reason=v["reason"], report=str(v["report"]))
        return Failed(name="Quarantined", message=f"batch {name} quarantined: {v['reason']}")
    if v.get("n_dropped"):
        log.warning("batch %s: %d bad row(s) dropped and reported", name, v["n_dropped"])
    r = route_task(cfg, name)
    log.info(
        "batch %s: %d of %d samples go to the large model (ε=%.3f), %d chunk(s)",
        name,
        r["n_large"],
        r["n"],
        r["epsilon"],
        len(r["chunks"]),
    )
    futures = [call_large_task.submit(cfg, name, s, e) for s, e in r["chunks"]]
    calls = [fut.result() for fut in futures]
    learned = learn_task(cfg, name, wait_for=futures)
    report = reports.with_costs(evaluate_task(cfg, name, learned["version"]), calls, t0, learned)
    registered = register_task(cfg, name, learned["version"], report, parent_run_id)
    publish(cfg, report, registered)
    events.after_cycle(*resolve(cfg), report, registered)
    log.info(
        "batch %s: accuracy %.3f, large-call rate %.3f; system v%04d is the challenger",
        name,
        report["accuracy"] or 0.0,
        report["large_call_rate"] or 0.0,
        learned["version"],
    )
    return {k: report[k] for k in ("batch", "cycle", "accuracy", "large_call_rate", "version")}
