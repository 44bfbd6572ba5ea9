"""SIGTERM stops a run within seconds and leaves no child process (kcm.procs.stop_within):
the handler path (the run reacts) and the watcher path (the run hangs in its handler, as
Prefect does while it retries a crash report against a dead API)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SCRIPT = """
import signal, subprocess, sys, time
from kcm.procs import stop_within
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
with stop_within(1.5):
    if sys.argv[1] == "hang":
        # a handler that never lets the run end (Prefect's crash report, API down)
        signal.signal(signal.SIGTERM, lambda *a: time.sleep(120))
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("mode", ["react", "hang"])
def test_sigterm_stops_within_seconds_and_leaves_no_child(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    took = time.monotonic() - t0
    assert code in (-signal.SIGTERM, -signal.SIGKILL), code
    # react: at once; hang: the grace (1.5 s) and the children's stop (<= 1 s) plus slack
    assert took < (1.0 if mode == "react" else 1.5 + 1.0 + 2.0) + 3.0, took
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    alive = psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    assert not alive, f"child {child} outlived the stopped run"


def test_outside_the_main_thread_it_does_nothing() -> None:
    import threading

    from kcm.procs import stop_within

    seen: list[object] = []

    def body() -> None:
        with stop_within(1.0):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [before]
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
def test_kill_9_of_kcm_continual_leaves_no_prefect_server_behind(tmp_path: Path) -> None:
    """Prefect's temporary API server (a uvicorn child) is tied to the kcm process
    (``flows.common.tie_temporary_server``): a SIGKILL of kcm mid-run takes it down too."""
    import os

    from tests.helpers import QUIET, set_args

    ws = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / ".prefect")
    kcm = [sys.executable, "-m", "kcm_app.cli"]
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(
        [*kcm, "feed", "--batches", "2", *set_args(f"flow.workdir={ws}")],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [*kcm, "continual", "--init", *set_args(f"flow.workdir={ws}", *QUIET)],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    me = psutil.Process(proc.pid)
    servers: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    while not servers and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        servers = [
            k
            for k in me.children(recursive=True)
            if "prefect.server.api.server" in " ".join(k.cmdline())
        ]
    assert servers, "the run started no temporary Prefect server"
    time.sleep(2)
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(servers, timeout=60)
    assert not alive, [k.pid for k in alive]
