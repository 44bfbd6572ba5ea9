"""The champion serves from a fresh virtualenv built from its logged requirements alone (no
checkout, no kcm install: kcm travels with the model as code). Opt-in: it builds a virtualenv
and installs torch, MLflow and the rest from the package index (minutes):

    KCM_FRESH_ENV=1 .venv/bin/python -m pytest tests/e2e/test_fresh_env.py
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests import helpers
from tests.conftest import REPO
from tests.helpers import set_args

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("KCM_FRESH_ENV"),
        reason="builds a virtualenv from the package index (minutes): set KCM_FRESH_ENV=1",
    ),
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_champion_serves_from_a_virtualenv_of_its_requirements(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sets = set_args("data.stream.n_batches=2", "dvc.enabled=false", "eval.plots=false")
    cmd = [sys.executable, "-m", "kcm_app.cli", "run", "--in-process", "--no-progress", *sets]
    subprocess.run([*cmd, "--out", str(ws)], cwd=REPO, check=True, capture_output=True)
    import shutil

    from mlflow import MlflowClient

    uri = f"sqlite:///{ws}/mlflow/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias("ws-digits", "champion")
    where = client.get_model_version_download_uri("ws-digits", mv.version)
    model = tmp_path / "model"  # the champion's files alone, away from the workspace
    shutil.copytree(where.removeprefix("file://"), model)
    reqs = model / "requirements.txt"
    assert "mlflow==" in reqs.read_text() and (model / "code" / "kcm").is_dir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(reqs)]
    subprocess.run(pip, check=True, timeout=1800)
    port = _port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=tmp_path,  # not the checkout: nothing of kcm is importable but the model's copy
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        helpers.wait_for_ping(proc, port, tmp_path / "serve.log", timeout=240)
        rows = pd.read_parquet(ws / "state" / "eval" / "traffic.parquet").head(5)
        rows = rows.drop(columns=[c for c in rows.columns if c == "label" or c.endswith("__eval")])
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert [
            p["answered_by"] in {"small", "large", "small-fallback"}
            for p in r.json()["predictions"]
        ] == [True] * 5
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
