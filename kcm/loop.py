"""The run loop, written once: bootstrap, reconcile the champion, ingest the inbox, and run
one cycle per pending batch. ``kcm run --in-process``, ``kcm bench`` and the DVC stage call
``run``; the Prefect flows run the same ``process_batch`` steps as tasks of their own graph.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from kcm.config import KCMConfig
from kcm.defaults import resolved
from kcm.failpoints import reach
from kcm.lock import exclusive
from kcm.models.large.base import EndpointError
from kcm.progress import CycleProgress
from kcm.report import summary_report, with_costs
from kcm.steps import (
    STEPS,
    bootstrap,
    call_large,
    evaluate,
    ingest,
    learn,
    record_failure,
    register,
    route,
    sync_champion,
    validate,
)
from kcm.workspace import Workspace

log = logging.getLogger(__name__)


def process_batch(
    cfg: KCMConfig,
    ws: Workspace,
    name: str,
    on_step: Callable[[str], None] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """One cycle: validate -> route -> call_large -> learn -> evaluate -> register."""
    t0 = time.perf_counter()

    def step(name: str) -> None:
        reach(f"cycle:after-{name}")  # the fault suite kills the run here
        if on_step is not None:
            on_step(name)

    v = validate(cfg, ws, name)
    step("validate")
    if not v["ok"]:
        return {"batch": name, "status": "quarantined", "reason": v["reason"]}
    try:
        r = route(cfg, ws, name)
        step("route")
        calls = [call_large(cfg, ws, name, start, end) for start, end in r["chunks"]]
        step("call_large")
        learned = learn(cfg, ws, name)
        step("learn")
        report = with_costs(evaluate(cfg, ws, name, learned["version"]), calls, t0, learned)
        step("evaluate")
        register(cfg, ws, name, learned["version"], report, parent_run_id=parent_run_id)
        step("register")
    except Exception as err:
        if isinstance(err, EndpointError):  # the endpoint's fault, not the batch's
            raise
        if record_failure(cfg, ws, name, f"{type(err).__name__}: {err}"):
            return {"batch": name, "status": "quarantined", "reason": str(err)}
        raise
    return {"batch": name, "status": "processed", "report": report}


@contextlib.contextmanager
def tracking(cfg: KCMConfig, ws: Workspace, active: bool = True) -> Iterator[str | None]:
    """The MLflow parent run of one continual invocation (None with the registry off or
    nothing to do), closed on every exit path: FINISHED, or FAILED on any exception."""
    if not (active and cfg.registry.enabled):
        yield None
        return
    from kcm.adapters import mlflow_tracking

    # params: the settings the run uses, auto / null as kcm.defaults decides them
    run_id = mlflow_tracking.start_parent(
        ws.root,
        cfg.registry.experiment,
        cfg.registry.tracking_uri,
        cfg=resolved(cfg, ws.task()) if ws.exists() else cfg,
    )
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        mlflow_tracking.end_parent(run_id, failed)


def prepare(cfg: KCMConfig, ws: Workspace) -> list[str]:
    """Bootstrap if needed, adopt the registry's champion, ingest: the pending batches."""
    bootstrap(cfg, ws)
    sync_champion(cfg, ws)
    return list(ingest(ws, cfg)["pending"])


def run(
    cfg: KCMConfig,
    ws: Workspace,
    progress: CycleProgress | None = None,
    on_cycle: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Process every pending batch in order, holding the workspace (``kcm.lock``) for the
    whole run; return the summary report."""
    with exclusive(ws.root, cfg.flow.lock_timeout):
        return _run(cfg, ws, progress, on_cycle)


def _run(
    cfg: KCMConfig,
    ws: Workspace,
    progress: CycleProgress | None,
    on_cycle: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    pending = prepare(cfg, ws)
    with tracking(cfg, ws, active=bool(pending)) as parent:
        for i, name in enumerate(pending):
            bar = progress.start(f"cycle {i}: {name}", len(STEPS)) if progress else None
            out = process_batch(
                cfg,
                ws,
                name,
                on_step=None if bar is None else (lambda _s, bar=bar: bar(1)),
                parent_run_id=parent,
            )
            if on_cycle is not None:
                on_cycle(out)
    return summary_report(ws, cfg)
