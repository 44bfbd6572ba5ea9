"""The ``kcm-continual`` flow: the run loop (``kcm.loop``) with the flows' runner, so that
every pending batch runs as a ``kcm-cycle`` subflow of tasks. A quarantined batch is
skipped (the next one is processed); a batch fault not yet final, or an environment fault,
stops the run with one line, leaving the batch pending for the next run. The accuracy
matrix lives in the workspace ledger, so a run next week continues it."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact, create_progress_artifact
from prefect.states import Failed

from flows.common import artifact_key, config_params, resolve, run_name, task_runner
from flows.cycle import PrefectRunner
from kcm import loop, project
from kcm.config import KCMConfig
from kcm.errors import EnvironmentFault, KCMError, NoWorkspace, RegistryError
from kcm.report import continual_markdown
from kcm.workspace import Workspace


class ContinualRunner(PrefectRunner):
    """The flows' runner, with the run's progress as a Prefect progress artifact."""

    def __init__(self, cfg: dict[str, Any], task_runner: Any = None) -> None:
        super().__init__(cfg, task_runner)
        self.progress_id: Any = None

    def cycle(
        self, cfg: KCMConfig, ws: Workspace, index: int, name: str, parent: str | None
    ) -> dict[str, Any]:
        from prefect.artifacts import update_progress_artifact

        if self.progress_id is None:
            self.progress_id = create_progress_artifact(
                progress=0.0,
                key=artifact_key(cfg, ws, "continual-progress"),
                description="pending batches",
            )
        n = len(ws.load_ledger().pending) + index  # the batches of this run so far
        update_progress_artifact(artifact_id=self.progress_id, progress=100.0 * index / max(n, 1))
        return super().cycle(cfg, ws, index, name, parent)


def run_tags(c: Any, ws: Any) -> list[str]:
    """Prefect tags of a project's runs: its project, dataset and registered model's name."""
    names = project.names(c, ws)
    return [
        "kcm",
        f"project:{names['project']}",
        f"dataset:{c.data.dataset}",
        f"model:{names['model']}",
    ]


def flow_config(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    workdir: str | None = None,
    inbox: str | None = None,
) -> dict[str, Any]:
    """The run's config from the flow's parameters."""
    extra = list(overrides or [])
    if workdir:
        extra.append(f"flow.workdir={json.dumps(str(workdir))}")
    if inbox:
        extra.append(f"flow.inbox={json.dumps(str(inbox))}")
    return config_params(config_path, extra)


def _run_name() -> str:
    from prefect.utilities.names import generate_slug

    def config(**p: Any) -> dict[str, Any]:
        return flow_config(
            p.get("config_path"), p.get("overrides"), p.get("workdir"), p.get("inbox")
        )

    return run_name(generate_slug(2), config)


@flow(name="kcm-continual", flow_run_name=_run_name)
def continual_flow(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    workdir: str | None = None,
    inbox: str | None = None,
    init: bool = False,
) -> Any:
    """Ingest the inbox of an existing workspace and run a cycle per pending batch.

    Args:
        config_path: the project's params.yaml (default: ./params.yaml if present, else the
            built-in defaults); `kcm config` prints what it resolves to.
        overrides: KEY=VALUE settings on top of it, e.g. ["routing.epsilon=0.95"].
        workdir: the project folder (default: the config's flow.workdir).
        inbox: where new batches arrive: a folder, file:// or fsspec URL (default: the
            config's flow.inbox, data/inbox in the project).
        init: create the workspace if the folder holds none (default: the run fails, one
            line naming the folder: a mistyped or unmounted path never becomes a new project).
    """
    log = get_run_logger()
    cfg = flow_config(config_path, overrides, workdir, inbox)
    c, ws = resolve(cfg)
    if not (init or ws.exists()):
        err = NoWorkspace.of(ws.root)
        log.error("%s", err)
        return Failed(name="NoWorkspace", message=str(err))
    runner = ContinualRunner(cfg, task_runner(c))
    try:
        with tags(*run_tags(c, ws)):  # every cycle's flow and task runs: filterable in the UI
            report = loop.run(c, ws, runner)
    except EnvironmentFault as err:  # one line naming the resource and the fix
        log.error("%s", err)
        return Failed(name="EnvironmentFault", message=str(err))
    except KCMError as err:  # one line: the busy workspace, the failed cycle, a bad setting
        log.error("%s", err)
        named = {"name": "Refused"} if isinstance(err, RegistryError) else {}
        return Failed(message=str(err), **named)
    run = report["run"]
    if not report["cycles"]:
        if run["waiting"]:
            return _budget_state(run, {"processed": [], "waiting": run["waiting"]})
        return {"processed": [], "quarantined": run["quarantined"]}
    if runner.progress_id is not None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(artifact_id=runner.progress_id, progress=100.0)
    create_markdown_artifact(
        key=artifact_key(c, ws, "continual"),
        markdown=continual_markdown(report, run["processed"], run["quarantined"]),
        description="continual run summary",
    )
    if run["circuit_open"]:
        return Failed(
            name="EndpointDown",
            message=f"the large-model circuit opened on {', '.join(run['circuit_open'])}: the "
            "endpoint failed repeatedly and the small model answered (see report.json "
            "large_failures)",
        )
    result = {
        "processed": run["processed"],
        "quarantined": run["quarantined"],
        "report": str(ws.state / "report.json"),
    }
    if run["budget_exhausted"] or run["waiting"]:
        return _budget_state(run, {**result, "waiting": run["waiting"]})
    return result


def _budget_state(run: dict[str, Any], result: dict[str, Any]) -> Any:
    """The spend cap was reached: a completed run, named so (``kcm.budget.exhausted`` was
    emitted; the CLI exits 5)."""
    from prefect.states import Completed

    return Completed(
        name="BudgetExhausted",
        message=f"the serving spend cap is reached: calls refused on "
        f"{', '.join(run['budget_exhausted']) or 'no batch'}; {len(run['waiting'])} batch(es) "
        "wait for budget (large.budget)",
        data=result,
    )
