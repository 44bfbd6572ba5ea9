"""The ``kcm-cycle`` flow: the cycle driver (``kcm.cycle``) with each step a Prefect task.

``PrefectRunner`` is the driver's runner for the flows: a step runs as a task named for it
(``validate-<batch>``, ``call_large-<batch>-<i>`` submitted side by side, ...), a cycle runs
as a ``kcm-cycle`` subflow, and every event is also sent to Prefect. The sequence, the
failure policy and the events are the driver's: nothing here repeats them. Every answer the
large model gives is committed to the workspace's answer store as it arrives, so a re-run
never buys an answer twice and no Prefect result cache is needed. A batch that fails
validation ends its subflow in a ``Quarantined`` (failed) state. The Markdown of the
artifacts is rendered by ``kcm.report``; this module only publishes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from flows.common import artifact_key, resolve, run_name
from kcm import report as reports
from kcm.config import KCMConfig
from kcm.cycle import Runner, run_cycle
from kcm.workspace import Workspace


class PrefectRunner(Runner):
    """The driver's steps as Prefect tasks, its cycles as ``kcm-cycle`` subflows."""

    def __init__(self, cfg: dict[str, Any], task_runner: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.task_runner = task_runner

    def call(self, step: str, batch: str, fn: Callable[..., Any], *args: Any) -> Any:
        return task(fn, name=step, task_run_name=f"{step}-{batch}", cache_policy=NONE)(*args)

    def map(
        self, step: str, batch: str, fn: Callable[..., Any], arglists: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        t = task(fn, name=step, cache_policy=NONE)
        futures = [
            t.with_options(task_run_name=f"{step}-{batch}-{i}").submit(*args)
            for i, args in enumerate(arglists)
        ]
        return [f.result() for f in futures]

    def emit(self, cfg: KCMConfig, ws: Workspace, kind: str, **payload: Any) -> None:
        super().emit(cfg, ws, kind, **payload)
        events.emit(cfg, ws, kind, **payload)

    def cycle(
        self, cfg: KCMConfig, ws: Workspace, index: int, name: str, parent: str | None
    ) -> dict[str, Any]:
        sub = (
            cycle_flow.with_options(task_runner=self.task_runner)
            if self.task_runner
            else cycle_flow
        )
        state = sub(self.cfg, name, parent, return_state=True)
        if state.name == "Quarantined":
            return {"batch": name, "status": "quarantined", "reason": state.message}
        return dict(state.result())  # a failed cycle raises its error here, as in-process


def publish_artifacts(c: KCMConfig, ws: Workspace, out: dict[str, Any]) -> None:
    """The cycle's artifacts: its table and the gate's decision, the plots (linked as
    files), and per-class accuracy."""
    report, committed = out["report"], out["committed"]
    create_markdown_artifact(
        key=artifact_key(c, ws, "cycle"),
        markdown=reports.cycle_markdown(report, committed),
        description=f"cycle {report['cycle']} on {report['batch']}",
    )
    if committed.get("plots"):
        plots = [str(ws.path(p)) for p in committed["plots"]]
        create_markdown_artifact(
            key=artifact_key(c, ws, "cycle-plots"),
            markdown=reports.plots_markdown(report, plots),
            description=f"plots of cycle {report['cycle']} ({Path(plots[0]).parent})",
        )
    create_table_artifact(
        key=artifact_key(c, ws, "per-class-accuracy"),
        table=reports.per_class_table(report, ws.meta()),
        description=f"per-class accuracy (balanced view) after {report['batch']}",
    )


def _cycle_run_name() -> str:
    from prefect.runtime import flow_run

    return run_name(f"cycle-{flow_run.parameters.get('name', '')}")


@flow(name="kcm-cycle", flow_run_name=_cycle_run_name, log_prints=False)
def cycle_flow(cfg: dict[str, Any], name: str, parent_run_id: str | None = None) -> Any:
    """Process one ingested batch (the driver's cycle, its steps as tasks)."""
    log = get_run_logger()
    c, ws = resolve(cfg)
    out = run_cycle(c, ws, name, PrefectRunner(cfg), parent_run_id)
    docs = (out.get("validation") or {}).get("data_docs")
    if docs:  # GX's Data Docs page of this batch's validation
        create_link_artifact(
            key=artifact_key(c, ws, "data-docs"),
            link=Path(docs).resolve().as_uri(),
            link_text=f"Data Docs: validation of {name}",
            description=f"Great Expectations validation of {name}",
        )
    if out["status"] == "quarantined":
        log.error("batch %s quarantined: %s", name, out["reason"])
        return Failed(name="Quarantined", message=f"batch {name} quarantined: {out['reason']}")
    publish_artifacts(c, ws, out)
    return out
