"""``kcm serve-model``: the project's champion behind MLflow's scoring server (``mlflow models
serve``), with the ``serving`` settings: worker processes, host, port, timeout and kcm's
request limits (rows and bytes per request). The command becomes the server (``exec``):
signals reach it directly."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kcm_app.common import add_config_args, load_cli_config


def server_command(cfg: Any, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow models serve`` command line and environment for the project's champion."""
    from kcm.adapters.mlflow_pyfunc import MAX_BYTES_ENV, MAX_ROWS_ENV
    from kcm.adapters.mlflow_registry import tracking_uri
    from kcm.errors import KCMError
    from kcm.project import model_name
    from kcm.workspace import Workspace

    ws = Workspace(workdir)
    ws.require()
    s = cfg.serving
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    if not mlflow_bin.is_file():
        raise KCMError(f"{mlflow_bin} is missing: install kcm (pip install -e .) in this Python")
    cmd = [str(mlflow_bin), "models", "serve", "-m", f"models:/{model_name(cfg, ws)}@champion"]
    cmd += ["--env-manager", "local", "-h", s.host, "-p", str(s.port)]
    cmd += ["-w", str(s.workers), "-t", str(s.timeout)]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(ws.root, cfg.registry.tracking_uri),
        MAX_ROWS_ENV: str(s.max_rows),
        MAX_BYTES_ENV: str(s.max_bytes),
        # the server's uvicorn is the one installed beside this Python
        "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return cmd, env


def champion_of(cfg: Any, workdir: Path) -> int:
    """The registered version the server will load (a KCMError when there is none)."""
    from kcm.adapters import mlflow_registry
    from kcm.errors import KCMError
    from kcm.project import experiment_name, model_name
    from kcm.workspace import Workspace

    ws = Workspace(workdir)
    mlflow_registry.setup(ws.root, experiment_name(cfg, ws), cfg.registry.tracking_uri)
    name = model_name(cfg, ws)
    version = mlflow_registry.champion_version(name)
    if version is None:
        raise KCMError(
            f"model {name!r} has no champion to serve yet: run `kcm continual --workdir "
            f"{ws.root}` until a version is promoted (see `kcm lineage`)"
        )
    return int(version)


def cmd_serve_model(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args)
    sets = {
        k: v
        for k, v in {
            "workers": args.workers,
            "host": args.host,
            "port": args.port,
            "max_rows": args.max_rows,
            "max_bytes": args.max_bytes,
            "timeout": args.timeout,
        }.items()
        if v is not None
    }
    if sets:
        cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update=sets)})
    workdir = Path(args.workdir or cfg.flow.workdir).resolve()
    cmd, env = server_command(cfg, workdir)
    champion_of(cfg, workdir)  # one line when there is nothing to serve yet
    sys.stderr.write(f"kcm serve-model: {' '.join(cmd[3:])}\n")
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


def add_serve_model_parser(sub: Any) -> None:
    sm = sub.add_parser(
        "serve-model", help="serve the champion over HTTP (MLflow's scoring server, N workers)"
    )
    add_config_args(sm)
    sm.add_argument("--workdir", help="the project folder (default: flow.workdir)")
    sm.add_argument("--workers", type=int, help="worker processes (serving.workers)")
    sm.add_argument("--host", help="serving.host (default 127.0.0.1)")
    sm.add_argument("--port", type=int, help="serving.port (default 5001)")
    sm.add_argument("--max-rows", type=int, help="rows one request may hold (serving.max_rows)")
    sm.add_argument("--max-bytes", type=int, help="bytes one request may hold (serving.max_bytes)")
    sm.add_argument("--timeout", type=int, help="seconds one request may take (serving.timeout)")
    sm.set_defaults(func=cmd_serve_model)
