"""The run loop, written once: bootstrap, finish publishing what a previous run committed,
reconcile the champion, ingest the inbox, and run one cycle per pending batch through a
``Runner`` (``kcm.cycle``: in this process, or as Prefect tasks and subflows from
``flows/``). The run's outcome covers every batch of the run: what was processed, what was
quarantined, on which batches the large model's circuit opened or the spend cap refused calls,
and which batches wait for budget (``large.budget.on_exhausted: wait``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from kcm import doctor, policy, project, steps
from kcm.config import KCMConfig
from kcm.cycle import Runner
from kcm.defaults import resolved
from kcm.errors import KCMError
from kcm.lock import exclusive
from kcm.report import summary_report
from kcm.steps.systems import caps, release, spend_guard
from kcm.workspace import Workspace, atomic_write_text

log = logging.getLogger(__name__)


@contextlib.contextmanager
def tracking(cfg: KCMConfig, ws: Workspace, active: bool = True) -> Iterator[str | None]:
    """The MLflow parent run of one continual invocation (None with the registry off or
    nothing to do), closed on every exit path: FINISHED, or FAILED on any exception."""
    if not (active and cfg.registry.enabled):
        yield None
        return
    from kcm.adapters import mlflow_tracking

    # params: the settings the run uses, auto / null as kcm.defaults decides them
    names = project.names(cfg, ws)
    run_id = mlflow_tracking.start_parent(
        ws.root,
        names["experiment"],
        cfg.registry.tracking_uri,
        cfg=resolved(cfg, ws.task()) if ws.exists() else cfg,
        tags={"kcm.project": names["project"], "kcm.model": names["model"]},
    )
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        mlflow_tracking.end_parent(run_id, failed)


def prepare(cfg: KCMConfig, ws: Workspace, runner: Runner) -> list[str]:
    """Check the workspace (``kcm.doctor``: a damaged ledger stops the run, a damaged store
    is set aside), bootstrap if needed, publish what a previous run committed but could not
    publish, adopt the registry's champion, ingest: the pending batches. No batch is at
    stake here: whatever fails is the environment's (one line, ``EnvironmentFault``)."""
    step, what = "check", "the workspace"
    try:
        release(ws)  # a run opens the stores afresh (a long-lived `kcm serve` process too)
        doctor.guard(ws)
        ws.begin_run()
        step = "bootstrap"
        runner.call(step, "workspace", steps.bootstrap, cfg, ws)
        ws.claim_identity()  # a copy of a workspace is a workspace of its own
        for name in steps.unpublished(ws):
            step, what = "publish", name
            log.info("publishing the committed cycle of %s (a previous run could not)", name)
            runner.call(step, name, steps.publish, cfg, ws, name, None)
        step, what = "sync_champion", "the registry's champion"
        steps.sync_champion(cfg, ws)
        step, what = "ingest", "the inbox"
        return list(runner.call(step, "inbox", steps.ingest, ws, cfg)["pending"])
    except KCMError:
        raise
    except Exception as err:
        raise policy.environment_fault(err, step, what) from err


def init(cfg: KCMConfig, ws: Workspace) -> dict[str, Any]:
    """Create the workspace (``kcm init``): its folders, the large model fitted once, system
    v0 and the ledger, under the workspace's lock; an existing one is left as it is."""
    with exclusive(ws.root, cfg.flow.lock_timeout):
        made = dict(steps.bootstrap(cfg, ws))
        ws.claim_identity()
    return {**made, "root": str(ws.root), **project.names(cfg, ws)}


def run(cfg: KCMConfig, ws: Workspace, runner: Runner | None = None) -> dict[str, Any]:
    """Process every pending batch in order, holding the workspace (``kcm.lock``) for the
    whole run. Returns the summary report (also ``state/report.json``) with ``run``: this
    run's processed and quarantined batches and those on which the circuit opened. A batch
    fault that is not yet final raises ``CycleFailed``; an environment fault raises
    ``EnvironmentFault`` (the batch waits in both)."""
    with exclusive(ws.root, cfg.flow.lock_timeout):
        return _run(cfg, ws, runner or Runner())


def _out_of_budget(cfg: KCMConfig, ws: Workspace) -> bool:
    """Batches wait: the serving cap cannot pay for one more call, and the budget says wait."""
    if cfg.large.budget.on_exhausted != "wait" or all(c is None for c in caps(cfg, "serve")):
        return False
    return spend_guard(ws, cfg, "serve").exhausted()


def _run(cfg: KCMConfig, ws: Workspace, runner: Runner) -> dict[str, Any]:
    pending = prepare(cfg, ws, runner)
    outcome: dict[str, list[str]] = {
        "processed": [],
        "quarantined": [],
        "circuit_open": [],
        "budget_exhausted": [],
        "waiting": [],
    }
    with tracking(cfg, ws, active=bool(pending)) as parent:
        for i, name in enumerate(pending):
            if _out_of_budget(cfg, ws):
                outcome["waiting"] = pending[i:]
                break
            out = runner.cycle(cfg, ws, i, name, parent)
            outcome[out["status"]].append(name)
            report = out.get("report") or {}
            if (report.get("large_ledger") or {}).get("circuit_open"):
                outcome["circuit_open"].append(name)
            if (report.get("money") or {}).get("refused"):
                outcome["budget_exhausted"].append(name)
    if outcome["circuit_open"]:
        log.error(
            "the large-model endpoint failed repeatedly on %s: the small model answered",
            outcome["circuit_open"],
        )
        runner.emit(cfg, ws, "endpoint_down", batches=outcome["circuit_open"])
    if outcome["budget_exhausted"] or outcome["waiting"]:
        spent = spend_guard(ws, cfg, "serve").spent()
        log.warning(
            "the serving spend cap is reached (spent %.4f this run, %.4f in 24 h; caps %s): "
            "calls refused on %s; %d batch(es) wait for budget",
            spent["run"],
            spent["day"],
            caps(cfg, "serve"),
            outcome["budget_exhausted"] or "no batch",
            len(outcome["waiting"]),
        )
        runner.emit(
            cfg,
            ws,
            "budget_exhausted",
            batches=outcome["budget_exhausted"],
            waiting=outcome["waiting"],
            spent=spent,
            per_run=cfg.large.budget.per_run,
            per_day=cfg.large.budget.per_day,
        )
    if not ws.load_ledger().cycles:
        log.info("nothing processed yet: the inbox %s is empty", ws.inbox)
        return {"run": outcome, "cycles": []}
    report = {**summary_report(ws, cfg), "run": outcome}
    atomic_write_text(ws.state / "report.json", json.dumps(report, indent=1, default=float))
    return report
