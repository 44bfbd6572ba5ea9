"""`kcm serve --interval 3600` with no PREFECT_API_URL: it starts a real local Prefect server,
the run at start-up completes (not an interval later), and SIGINT stops everything it started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from kcm.config import config_to_dict, load_config

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_serve_starts_a_server_runs_on_schedule_and_stops_cleanly(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sets = ["judge.epochs=10", "data.stream.n_batches=2", f"flow.workdir={ws}", "eval.plots=false"]
    cfg = load_config(None, [*sets, "validation.data_docs=false"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "client-home")
    kcm = [sys.executable, "-m", "kcm_app.cli"]
    subprocess.run(
        [*kcm, "feed", "--config", str(tmp_path / "params.yaml"), "--batches", "1"],
        env=env,
        check=True,
        cwd=tmp_path,
        timeout=120,
    )
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        # an hour between runs: the run seen below is the one at start-up
        [*kcm, "serve", "--init", "--interval", "3600", "--config", str(tmp_path / "params.yaml")],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server_pid = None
    try:
        state = ws / "state" / "serve.json"
        info = _wait(lambda: state.is_file() and json.loads(state.read_text()), 180, "the server")
        server_pid, api = info["server_pid"], info["api_url"]
        assert server_pid and _alive(server_pid) and api.startswith("http://127.0.0.1:")
        ui = httpx.get(api.removesuffix("/api"), timeout=30)  # the UI link it prints works
        assert ui.status_code == 200 and "<html" in ui.text.lower(), ui.status_code

        def completed() -> list:
            body = {
                "flows": {"name": {"any_": ["kcm-continual"]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            }
            r = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
            return r.json() if r.status_code == 200 else []

        runs = _wait(completed, 240, "a completed scheduled kcm-continual run")
        assert runs[0]["deployment_id"] is not None  # it came from the served deployment
        assert (ws / "state" / "ledger.json").is_file()

        def running() -> bool:
            body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
            r = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
            return r.status_code == 200 and bool(r.json())

        # stop while a run of the deployment is in flight, the hard case (best effort on
        # timing): the next scheduled one is an hour away, so one is asked for now
        deployment = runs[0]["deployment_id"]
        httpx.post(f"{api}/deployments/{deployment}/create_flow_run", json={}, timeout=10)
        with contextlib.suppress(AssertionError):
            _wait(running, 30, "a run in flight")
    finally:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=150)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    took = time.monotonic() - t0
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    # a run in flight gets flow.stop_grace (10 s), the server 10 s: a bound, not a speed target
    assert took < 40, f"serve took {took:.0f}s to stop"
    if server_pid is not None:
        _wait(lambda: not _alive(server_pid), 30, "the server to exit")
    assert not (ws / "state" / "serve.json").exists()
