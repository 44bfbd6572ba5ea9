"""``kcm serve``: run ``kcm-continual`` on a schedule through Prefect.

Prefect cannot schedule against its ephemeral API. So when ``PREFECT_API_URL`` is unset this
starts a real local server (``prefect server start`` on loopback, its database under
``<workdir>/.prefect``), waits for its health check, serves the deployment against it, and
stops the server on SIGINT/SIGTERM. When ``PREFECT_API_URL`` is set, it serves against that
server and starts nothing. Prefect is imported only after the API URL is settled. With
``--interval``, the first run starts at start-up (then one every interval), not an interval
later.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kcm.env import OFFLINE_ENV
from kcm.procs import popen_tied, stop_group, stop_processes


def _say(msg: str, *args: Any) -> None:
    """Status lines of the serve command on stderr (Prefect reconfigures logging)."""
    sys.stderr.write(f"kcm serve: {msg % args}\n")
    sys.stderr.flush()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefect_exe() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "prefect"]


def start_local_server(home: Path, timeout: float = 120.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``prefect server start`` on a free loopback port and wait until it is healthy."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**OFFLINE_ENV, **os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "true"}
    env.pop("PREFECT_API_URL", None)
    logfile = open(home / "server.log", "ab")  # noqa: SIM115 - handed to the child process
    # its own process group, and gone with us even after a SIGKILL (kcm.procs)
    proc = popen_tied(
        [*_prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (home / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"prefect server exited with code {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(
        f"prefect server did not answer {url}/health within {timeout:.0f}s "
        f"(log: {home / 'server.log'})"
    )


def stop_server(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop the server and every process it started (its own process group)."""
    stop_group(proc, grace)


def _stop_runs(exclude: int | None, grace: float) -> None:
    """Stop the flow runs still in flight (child processes) while the server is still up: SIGTERM
    (each reports its crash and exits), ``grace`` seconds, then SIGKILL. A stopped run leaves its
    batch pending (nothing is committed before ``register``; every step survives a kill)."""
    import psutil

    me = psutil.Process()
    kids = [
        k
        for k in me.children(recursive=True)
        if (exclude is None or (k.pid != exclude and _pgid(k.pid) != exclude))
        and "resource_tracker" not in " ".join(_cmdline(k))
    ]
    if not kids:
        return
    _say("stopping %d running process(es) (at most %.0fs)", len(kids), grace)
    stop_processes(kids, grace)


def deployment_name(config_path: Path, workdir: Path) -> str:
    """The served deployment is the project's (``kcm-continual/<project>``): projects served
    against one Prefect API never replace each other's deployment nor share its limit."""
    from kcm.config import load_config
    from kcm.project import project_name
    from kcm.workspace import Workspace

    return project_name(load_config(config_path), Workspace(workdir))


def _stop_grace(config_path: Path) -> float:
    from kcm.config import load_config

    try:
        return float(load_config(config_path).flow.stop_grace)
    except Exception:  # a config that no longer loads must not keep the server from stopping
        return 10.0


def _cmdline(proc: object) -> list[str]:
    try:
        return list(proc.cmdline())  # type: ignore[attr-defined]
    except Exception:
        return []


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def run_at_start(
    deployment: str, stop: threading.Event, tags: list[str], timeout: float = 120.0
) -> None:
    """Once the served deployment is registered, ask for one run of it now."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                found = client.read_deployment_by_name(deployment)
            except ObjectNotFound:
                stop.wait(0.5)
                continue
            client.create_flow_run_from_deployment(found.id, tags=[*tags, "kcm:start-up"])
            _say("the first run starts now (start-up); then every interval")
            return
    _say("the deployment %s did not appear: the first run waits for the interval", deployment)


def serve(
    config_path: Path,
    workdir: Path,
    inbox: str | None = None,
    cron: str | None = None,
    interval: float | None = None,
) -> int:
    """Serve the continual flow on a cron or interval schedule until SIGINT/SIGTERM."""
    server = None
    state_file = workdir / "state" / "serve.json"
    if not os.environ.get("PREFECT_API_URL"):
        home = workdir / ".prefect"
        _say("PREFECT_API_URL is not set: starting a local Prefect server (home %s)", home)
        server, url = start_local_server(home)
        os.environ["PREFECT_API_URL"] = url
        os.environ["PREFECT_HOME"] = str(home)
        _say(
            "Prefect server ready at %s (pid %d); its UI: %s", url, server.pid, url[: -len("/api")]
        )
    url = os.environ["PREFECT_API_URL"]
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(
        json.dumps(
            {"pid": os.getpid(), "api_url": url, "server_pid": server.pid if server else None}
        )
    )

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # also when started with SIGINT ignored (nohup, &)
    started = threading.Event()  # set on the way out: the start-up helper gives up
    try:
        from flows.continual import continual_flow  # prefect reads PREFECT_API_URL here

        params: dict[str, Any] = {"config_path": str(config_path)}
        if inbox:
            params["inbox"] = inbox
        schedule: dict[str, Any] = {"cron": cron} if cron else {"interval": interval}
        name = deployment_name(config_path, workdir)
        tags = ["kcm", f"project:{name}"]
        _say("serving kcm-continual/%s (%s) against %s", name, schedule, url)
        if interval is not None:  # not an interval after start-up: now, then on the interval
            threading.Thread(
                target=run_at_start, args=(f"kcm-continual/{name}", started, tags), daemon=True
            ).start()
        # one run at a time: a scheduled run never overlaps the previous one (this runner: limit;
        # every runner of the deployment: global_limit)
        continual_flow.serve(
            name=name,
            parameters=params,
            limit=1,
            global_limit=1,
            tags=tags,
            **schedule,
        )
    except KeyboardInterrupt:
        _say("stopping")
    finally:
        started.set()
        _stop_runs(exclude=server.pid if server else None, grace=_stop_grace(config_path))
        if server is not None:
            stop_server(server)
            _say("Prefect server stopped")
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()
    return 0
