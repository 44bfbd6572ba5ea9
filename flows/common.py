"""What the flows share: resolving config and workspace from plain, serialisable parameters."""

from __future__ import annotations

from typing import Any

from kcm.config import KCMConfig, config_from_dict, config_to_dict, load_config
from kcm.env import apply_offline_env
from kcm.procs import tied_subprocess_module
from kcm.project import project_name
from kcm.workspace import Workspace

apply_offline_env()


def tie_temporary_server() -> None:
    """Without ``PREFECT_API_URL`` Prefect starts a temporary API server (uvicorn) in a child
    process, which a ``kill -9`` of kcm left running, orphaned. Prefect's server module gets a
    ``subprocess`` whose ``Popen`` ties the child to this process (``kcm.procs``): the kernel
    stops the server when kcm dies, however it dies."""
    from prefect.server.api import server

    if not getattr(server.subprocess, "kcm_tied", False):
        server.subprocess = tied_subprocess_module()  # type: ignore[attr-defined]


tie_temporary_server()


def resolve(cfg: dict[str, Any]) -> tuple[KCMConfig, Workspace]:
    c = config_from_dict(cfg, "flow parameters")
    return c, Workspace(c.flow.workdir, c.flow.inbox)


def config_params(config_path: str | None, overrides: list[str] | None) -> dict[str, Any]:
    return config_to_dict(load_config(config_path, overrides or []))


def artifact_key(c: KCMConfig, ws: Workspace, what: str) -> str:
    """Artifact keys are global on a Prefect server: each project's are its own."""
    return f"kcm-{project_name(c, ws)}-{what}"


def run_name(what: str, cfg: Any = None) -> str:
    """A flow run's name, led by its project (``<project>-<what>``). ``cfg``: the run's
    config as a dict, else a callable of the run's parameters that makes one; a config that
    does not load leaves the name ``kcm-<what>`` (the run reports the error itself)."""
    from prefect.runtime import flow_run

    try:
        c, ws = resolve(cfg(**flow_run.parameters) if callable(cfg) else flow_run.parameters["cfg"])
        return f"{project_name(c, ws)}-{what}"
    except Exception:
        return f"kcm-{what}"


def task_runner(cfg: KCMConfig) -> Any:
    """Threads by default (the large-model step is mostly waiting on I/O); Dask or Ray when
    configured (``flow.task_runner``), which need the ``dask``/``ray`` extras."""
    kind = cfg.flow.task_runner
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.flow.max_workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as err:
            raise RuntimeError(
                "flow.task_runner=dask needs prefect-dask: pip install 'kcm[dask]'"
            ) from err
        if cfg.flow.dask_address:
            return DaskTaskRunner(address=cfg.flow.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": cfg.flow.max_workers,
                "threads_per_worker": 1,
                "processes": True,
            }
        )
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as err:
        raise RuntimeError(
            "flow.task_runner=ray needs prefect-ray: pip install 'kcm[ray]'"
        ) from err
    return RayTaskRunner()
