"""The fault suite, part 1: one run per workspace, and an ingest that survives SIGKILL at any
point. Real processes are killed (``kcm.failpoints``); nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kcm.config import KCMConfig, with_overrides
from kcm.errors import EnvironmentFault
from kcm.lock import WorkspaceBusy, exclusive
from kcm.steps import ingest
from kcm.workspace import Workspace
from tests.helpers import TINY_DIGITS, set_args

REPO = Path(__file__).resolve().parents[2]


def _inbox(root: Path, n: int = 3) -> Path:
    inbox = root / "data" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (inbox / f"batch-{i:03d}.csv").write_text(f"x,label\n{i},a\n{i + 1},b\n")
    return inbox


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_second_holder_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    with (
        exclusive(tmp_path),
        pytest.raises(WorkspaceBusy, match=rf"pid {os.getpid()} .*started 20"),
        exclusive(tmp_path),
    ):
        pass


def test_a_second_holder_waits_within_its_timeout(tmp_path: Path) -> None:
    held = threading.Event()

    def hold() -> None:
        with exclusive(tmp_path):
            held.set()
            time.sleep(0.6)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    with exclusive(tmp_path, timeout=30):  # got it once the first holder let go
        assert not t.is_alive()
    t.join()


def test_sigkill_of_the_holder_releases_the_workspace(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kcm.lock import exclusive\n"
            f"with exclusive({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkspaceBusy, match=f"pid {holder.pid}"), exclusive(tmp_path):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    with exclusive(tmp_path):  # the kernel dropped the lock with the process
        pass


def test_a_run_on_a_held_workspace_changes_nothing(tmp_path: Path) -> None:
    cfg = with_overrides(KCMConfig(), ["registry.enabled=false", "dvc.enabled=false"])
    ws = Workspace(tmp_path)
    inbox = _inbox(tmp_path)
    from kcm import loop

    with exclusive(tmp_path), pytest.raises(WorkspaceBusy, match="one run per workspace"):
        loop.run(cfg, ws)
    assert len(list(inbox.iterdir())) == 3 and not ws.exists()


@pytest.mark.parametrize("point", ["ingest:copied", "ingest:recorded"])
def test_ingest_killed_at_each_point_loses_nothing(tmp_path: Path, point: str) -> None:
    inbox = _inbox(tmp_path)
    code = (
        "from kcm.steps import ingest; from kcm.workspace import Workspace\n"
        f"ingest(Workspace({str(tmp_path)!r}))"
    )
    killed = _python(code, env={"KCM_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ws = Workspace(tmp_path)
    after_kill = ws.load_ledger()
    # the first file is in the inbox or pending in the ledger, never neither
    first = inbox / "batch-000.csv"
    assert first.exists() or len(after_kill.order) == 1
    ingest(ws)  # the next run
    ledger = ws.load_ledger()
    assert not list(inbox.iterdir())
    assert len(ledger.order) == 3 == len(ledger.pending)
    seqs = [n.split("-", 1)[0] for n in ledger.order]
    assert seqs == ["0000", "0001", "0002"]  # no number reused, none skipped
    on_disk = sorted(p.name for p in ws.batches.iterdir() if p.is_file())
    assert on_disk == sorted(ledger.order)
    assert not (ws.batches / "duplicates").exists()  # an interrupted move is not a duplicate
    sources = sorted(Path(ledger.batches[n].source or "").name for n in ledger.order)
    assert sources == ["batch-000.csv", "batch-001.csv", "batch-002.csv"]


def test_dvc_refusing_a_batch_says_so_in_one_line_and_the_batch_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workspace that is a git checkout whose .gitignore ignores the batches' .dvc files
    (issue #21: ``/data/batches/*``, as the repository's own did): ingest stops with one line naming the .dvc file, the pattern and the fix; nothing is counted
    against the batch, which stays pending; once the pattern is gone the next run versions it."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site-cache"))
    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws_root, check=True)
    (ws_root / ".gitignore").write_text("/data/batches/*\n")
    inbox = _inbox(ws_root, 1)
    cfg = with_overrides(KCMConfig(), ["registry.enabled=false", "dvc.enabled=true"])
    ws = Workspace(ws_root)

    with pytest.raises(EnvironmentFault) as refused:
        ingest(ws, cfg)
    name = ws.load_ledger().order[0]
    dvcfile = f"data/batches/{name}.dvc"
    assert str(refused.value) == (
        f"ingest: DVC refuses {dvcfile} because git ignores it (.gitignore:1:/data/batches/*): "
        "remove the pattern that matches it from .gitignore, or add '!*.dvc' after it, then "
        f"run again (batch {name} is kept, pending: the next run versions it)"
    )
    rec = ws.load_ledger().batches[name]
    assert (rec.status, rec.failures, rec.dvc_md5) == ("ingested", 0, None)  # not its fault
    assert (ws.batches / name).is_file() and not list(inbox.iterdir())
    with pytest.raises(EnvironmentFault, match=f"DVC refuses {dvcfile} because git ignores"):
        ingest(ws, cfg)  # every run says the same until the pattern goes

    (ws_root / ".gitignore").write_text("/data/batches/*\n!*.dvc\n")
    assert ingest(ws, cfg)["pending"] == [name]
    rec = ws.load_ledger().batches[name]
    assert rec.dvc_md5 and rec.dvc_file == dvcfile and (ws_root / dvcfile).is_file()
    # kcm's DVC settings stay out of git: the remote (a path of this machine) is local config
    assert "dvc-remote" in (ws_root / ".dvc" / "config.local").read_text()
    assert "dvc-remote" not in (ws_root / ".dvc" / "config").read_text()


def test_ledger_writes_are_whole_after_a_kill(tmp_path: Path) -> None:
    """Kill a process that rewrites the ledger in a loop: what is left always parses."""
    code = (
        "from kcm.workspace import Workspace, Ledger\n"
        f"ws = Workspace({str(tmp_path)!r}); led = Ledger()\n"
        "for i in range(100000):\n"
        "    led.cycles.append({'i': i, 'pad': 'x' * 200}); ws.save_ledger(led)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    ledger = tmp_path / "state" / "ledger.json"
    deadline = time.monotonic() + 60
    while not ledger.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert json.loads(ledger.read_text())["cycles"]


@pytest.mark.slow
def test_an_overlapping_flow_run_exits_naming_the_holder(tmp_path: Path) -> None:
    """``kcm continual`` (the Prefect flow) against a workspace another run holds: exit 1
    with one line naming that run; the inbox is untouched."""
    inbox = _inbox(tmp_path)
    with exclusive(tmp_path):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "kcm_app.cli",
                "continual",
                "--init",
                "--workdir",
                str(tmp_path),
                "--set",
                "registry.enabled=false",
                "--set",
                "dvc.enabled=false",
            ],
            cwd=REPO,
            env={**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"in use by another kcm run (pid {os.getpid()}" in proc.stderr
    assert len(list(inbox.iterdir())) == 3
    assert not (tmp_path / "state" / "ledger.json").exists()


def test_a_child_started_by_kcm_dies_with_it_even_after_sigkill(tmp_path: Path) -> None:
    """The Prefect server ``kcm serve`` starts is spawned this way (``kcm.procs``)."""
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kcm.procs import popen_tied\n"
            "c = popen_tied([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); time.sleep(120)",
        ],
        cwd=REPO,
    )
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    os.kill(child, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return  # gone (reaped by init)
        try:  # a zombie awaiting init counts as gone
            state = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.1)
    pytest.fail(f"child {child} outlived its SIGKILLed parent")


@pytest.mark.slow
def test_a_project_deleted_and_started_over_at_the_same_path_runs(tmp_path: Path) -> None:
    """Through the Prefect flows: nothing cached outside the workspace outlives it."""
    import shutil

    out = tmp_path / "proj"
    args = [
        sys.executable,
        "-m",
        "kcm_app.cli",
        "run",
        "--out",
        str(out),
        "--no-progress",
        *set_args("data.stream.n_batches=2", *TINY_DIGITS),
    ]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}  # shared by both runs
    first = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.rmtree(out)
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    ledger = json.loads((out / "state" / "ledger.json").read_text())
    assert len(ledger["cycles"]) == 2
