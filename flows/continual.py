"""The ``kcm-continual`` flow: process every pending batch in order, one ``kcm-cycle`` subflow
each. A quarantined batch is skipped (the next one is processed); any other failure stops the
run, leaving that batch pending for the next run. The accuracy matrix lives in the workspace
ledger, so a run next week continues it."""

from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.states import Failed

from flows import events
from flows.common import config_params, resolve, task_runner
from flows.cycle import bootstrap_task, cycle_flow, ingest_task
from kcm import loop, steps
from kcm.lock import WorkspaceBusy, exclusive
from kcm.report import continual_markdown, summary_report
from kcm.workspace import atomic_write_text


def _circuit_opened(ws: Any, names: list[str]) -> list[str]:
    """The batches of this run on which the circuit breaker stopped calling the endpoint."""
    cycles = {c.get("batch"): c for c in ws.load_ledger().cycles}
    return [n for n in names if (cycles.get(n, {}).get("large_ledger") or {}).get("circuit_open")]


class _CycleFailed(Exception):
    """A cycle subflow ended failed or crashed (its batch stays pending)."""


@task(name="summarize", cache_policy=NONE)
def summary_task(cfg: dict[str, Any]) -> dict[str, Any] | None:
    c, ws = resolve(cfg)
    if not ws.load_ledger().cycles:
        return None
    report = summary_report(ws, c)
    atomic_write_text(ws.state / "report.json", json.dumps(report, indent=1, default=float))
    return report


@flow(name="kcm-continual")
def continual_flow(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    workdir: str | None = None,
    inbox: str | None = None,
) -> Any:
    """Bootstrap the workspace if needed, ingest the inbox, run a cycle per pending batch.

    Args:
        config_path: the project's params.yaml (default: ./params.yaml if present, else the
            built-in defaults); `kcm config` prints what it resolves to.
        overrides: KEY=VALUE settings on top of it, e.g. ["routing.epsilon=0.95"].
        workdir: the project folder (default: the config's flow.workdir).
        inbox: where new batches arrive: a folder, file:// or fsspec URL (default: the
            config's flow.inbox, data/inbox in the project).
    """
    log = get_run_logger()
    extra = list(overrides or [])
    if workdir:
        extra.append(f"flow.workdir={json.dumps(str(workdir))}")
    if inbox:
        extra.append(f"flow.inbox={json.dumps(str(inbox))}")
    cfg = config_params(config_path, extra)
    c, ws = resolve(cfg)
    try:  # one run per workspace, whatever started it (a schedule, a person, a deployment)
        with exclusive(ws.root, c.flow.lock_timeout):
            return _continual(cfg, c, ws)
    except WorkspaceBusy as err:
        log.error("%s", err)
        return Failed(message=str(err))


def run_tags(c: Any, ws: Any) -> list[str]:
    """Prefect tags of a project's runs: its folder, dataset and registered model's name."""
    return [
        "kcm",
        f"project:{ws.root.name}",
        f"dataset:{c.data.dataset}",
        f"model:{c.registry.model_name}",
    ]


def _continual(cfg: dict[str, Any], c: Any, ws: Any) -> Any:
    log = get_run_logger()
    bootstrap_task(cfg)
    steps.sync_champion(c, ws)
    ingested = ingest_task(cfg, return_state=True)
    if ingested.is_failed():  # the environment refused a batch: its one line is the message
        return Failed(message=str(ingested.message))
    pending = ingested.result()["pending"]
    runner = task_runner(c)
    done, quarantined = [], []
    progress = (
        create_progress_artifact(
            progress=0.0,
            key="kcm-continual-progress",
            description=f"{len(pending)} pending batch(es)",
        )
        if pending
        else None
    )
    try:
        with (
            tags(*run_tags(c, ws)),  # every cycle's flow and task runs: filterable in the UI
            loop.tracking(c, ws, active=bool(pending)) as parent,  # FAILED on an exception
        ):
            for i, name in enumerate(pending):
                if progress is not None and i:
                    update_progress_artifact(
                        artifact_id=progress, progress=100.0 * i / len(pending)
                    )
                t0 = time.perf_counter()
                state = cycle_flow.with_options(task_runner=runner)(
                    cfg, name, parent, return_state=True
                )
                if state.name == "Quarantined":
                    quarantined.append(name)
                    continue
                if state.is_failed() or state.is_crashed():
                    endpoint = "EndpointError" in str(state.message)  # not the batch's fault
                    if not endpoint and steps.record_failure(c, ws, name, str(state.message)):
                        quarantined.append(name)  # failed flow.max_attempts times: set aside
                        events.emit(c, ws, "quarantined", batch=name, reason=str(state.message))
                        continue
                    log.error(
                        "cycle for %s did not complete (%s); it stays pending and will be retried",
                        name,
                        state.message,
                    )
                    raise _CycleFailed(f"cycle for {name} failed: {state.message}")
                done.append(name)
                log.info("cycle %s done in %.1fs", name, time.perf_counter() - t0)
    except _CycleFailed as err:
        return Failed(message=str(err))
    if progress is not None:
        update_progress_artifact(artifact_id=progress, progress=100.0)
    report = summary_task(cfg)
    if report is None:
        log.info("nothing processed yet: the inbox %s is empty", ws.inbox)
        return {"processed": [], "quarantined": quarantined}
    create_markdown_artifact(
        key="kcm-continual",
        markdown=continual_markdown(report, done, quarantined),
        description="continual run summary",
    )
    down = _circuit_opened(ws, done)
    if down:
        log.error(
            "the large-model endpoint failed repeatedly on %s: the small model answered", down
        )
        events.emit(c, ws, "endpoint_down", batches=down)
        return Failed(
            name="EndpointDown",
            message=f"the large-model circuit opened on {', '.join(down)}: the endpoint failed "
            "repeatedly and the small model answered (see report.json large_failures)",
        )
    return {"processed": done, "quarantined": quarantined, "report": str(ws.state / "report.json")}
