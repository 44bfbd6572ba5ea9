"""The cycle driver, written once: the sequence of a cycle's steps, the failure policy
(``kcm.policy``) and the events. ``Runner`` runs each step in this process; the flows'
runner (``flows/cycle.py``) runs the same steps as Prefect tasks and each cycle as a
subflow. ``kcm run --in-process``, the flows, the DVC stage and the bench all come here.

validate -> route -> call_large (in chunks) -> deliver -> learn -> evaluate -> commit -> publish

``commit`` is the gate and one ledger write; ``publish`` (plots, MLflow, aliases) comes after
it, so its failure never touches the batch and the next run finishes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from kcm import events, policy, steps
from kcm.config import KCMConfig
from kcm.errors import KCMError
from kcm.failpoints import reach
from kcm.progress import CycleProgress
from kcm.report import with_costs
from kcm.workspace import Workspace

log = logging.getLogger(__name__)

STEPS = ("validate", "route", "call_large", "deliver", "learn", "evaluate", "commit", "publish")


class CycleFailed(KCMError, RuntimeError):
    """A cycle failed on a batch fault and was counted; the batch stays pending."""


class Runner:
    """Runs the driver's steps, one after the other, in this process, and records events in
    the workspace (``state/events.jsonl``). ``progress`` shows one bar per cycle."""

    def __init__(self, progress: CycleProgress | None = None) -> None:
        self.progress = progress
        self._bar: Callable[[int], None] | None = None

    def call(self, step: str, batch: str, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def map(
        self, step: str, batch: str, fn: Callable[..., Any], arglists: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        return [fn(*args) for args in arglists]

    def emit(self, cfg: KCMConfig, ws: Workspace, kind: str, **payload: Any) -> None:
        events.record(ws, kind, payload)
        log.info("event %s: %s", events.event_name(kind), payload.get("batch", ""))

    def cycle(
        self, cfg: KCMConfig, ws: Workspace, index: int, name: str, parent: str | None
    ) -> dict[str, Any]:
        if self.progress is not None:
            self._bar = self.progress.start(f"cycle {index}: {name}", len(STEPS))
        return run_cycle(cfg, ws, name, self, parent)

    def done(self, step: str) -> None:
        reach(f"cycle:after-{step}")  # the fault suite kills the run here
        if self._bar is not None:
            self._bar(1)


def run_cycle(
    cfg: KCMConfig,
    ws: Workspace,
    name: str,
    runner: Runner | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """One cycle of batch ``name``: ``status`` processed or quarantined. A batch fault
    counts against the batch (``CycleFailed`` until ``flow.max_attempts``, then quarantined);
    an environment fault raises ``EnvironmentFault`` and counts against nothing."""
    runner = runner or Runner()
    t0 = time.perf_counter()
    step = "validate"
    try:
        v = runner.call(step, name, steps.validate, cfg, ws, name)
        runner.done(step)
        if not v["ok"]:
            runner.emit(cfg, ws, "quarantined", batch=name, reason=v["reason"], report=v["report"])
            return {"batch": name, "status": "quarantined", "reason": v["reason"], "validation": v}
        step = "route"
        previous = (ws.load_ledger().cycles or [None])[-1]
        routed = runner.call(step, name, steps.route, cfg, ws, name)
        runner.done(step)
        step = "call_large"
        chunks = [(cfg, ws, name, s, e) for s, e in routed["chunks"]]
        calls = runner.map(step, name, steps.call_large, chunks)
        runner.done(step)
        step = "deliver"
        answers = runner.call(step, name, steps.deliver_answers, cfg, ws, name)
        runner.done(step)
        step = "learn"
        learned = runner.call(step, name, steps.learn, cfg, ws, name)
        runner.done(step)
        step = "evaluate"
        version = learned["version"]
        report = runner.call(step, name, steps.evaluate, cfg, ws, name, version)
        report = with_costs(report, calls, t0, learned, answers, routed, previous)
        runner.done(step)
        step = "commit"
        committed = runner.call(step, name, steps.commit, cfg, ws, name, version, report)
        runner.done(step)
    except Exception as err:
        return _failed(cfg, ws, name, step, err, runner)
    fault = None
    try:
        committed |= runner.call("publish", name, steps.publish, cfg, ws, name, parent_run_id)
        runner.done("publish")
    except Exception as err:  # the batch is committed: never its fault
        fault = _environment(cfg, ws, name, "publish", err, runner)
    for kind, payload in events.after_cycle(cfg, report, committed):
        runner.emit(cfg, ws, kind, **payload)
    if fault is not None:
        raise fault
    log.info(
        "batch %s: accuracy %.3f, large-call rate %.3f; system v%04d is the challenger",
        name,
        report.get("accuracy") or 0.0,
        report.get("large_call_rate") or 0.0,
        version,
    )
    return {
        "batch": name,
        "status": "processed",
        "report": report,
        "committed": committed,
        "validation": v,
    }


def _environment(
    cfg: KCMConfig, ws: Workspace, name: str, step: str, err: BaseException, runner: Runner
) -> Exception:
    fault = policy.environment_fault(err, step, name)
    fault.__cause__ = err
    log.error("%s", fault)
    try:  # the event log is on the same disk that may have failed
        runner.emit(cfg, ws, "environment", batch=name, step=step, error=str(fault))
    except Exception as again:
        log.warning("could not record the event: %s", again)
    return fault


def _failed(
    cfg: KCMConfig, ws: Workspace, name: str, step: str, err: BaseException, runner: Runner
) -> dict[str, Any]:
    """The failure policy (``kcm.policy``) applied to a cycle that raised in ``step``."""
    if policy.classify(err) == policy.ENVIRONMENT:
        raise _environment(cfg, ws, name, step, err, runner)
    error = f"{type(err).__name__}: {err}"
    if steps.record_failure(cfg, ws, name, error):
        runner.emit(cfg, ws, "quarantined", batch=name, reason=error[:500])
        return {"batch": name, "status": "quarantined", "reason": error}
    raise CycleFailed(
        f"the cycle of {name} failed in {step} ({error}); it stays pending and is retried by "
        f"the next run (attempt {ws.load_ledger().batches[name].failures} of "
        f"{cfg.flow.max_attempts})"
    ) from err
