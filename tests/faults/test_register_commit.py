"""The fault suite, part 4: the registry never points at what the ledger has not committed.

A real run (digits, MLflow registry on, DVC off) is SIGKILLed right after the ledger commit
of its cycle, before anything is published, or after publishing was recorded, before the
aliases move; the next run finishes either. A version registered by a cycle that never
committed is refused by ``kcm promote``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kcm.config import load_config
from kcm.errors import KCMError
from kcm.steps import promote, sync_champion
from kcm.workspace import Workspace
from tests.helpers import REGISTERED_DIGITS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SETS = list(REGISTERED_DIGITS)


def _run(out: Path, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "kcm_app.cli", "run", "--in-process", "--no-progress"]
    for s in SETS:
        args += ["--set", s]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out}/mlflow/mlflow.db"}
    env.pop("KCM_FAILPOINT", None)
    if failpoint:
        env["KCM_FAILPOINT"] = failpoint
    return subprocess.run(
        [*args, "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_killed_between_commit_and_publish_the_next_run_publishes_first(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from kcm import loop
    from kcm.cycle import Runner

    out = tmp_path / "ws"
    killed = _run(out, "commit:committed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ws = Workspace(out)
    (cycle,) = ws.load_ledger().cycles
    assert cycle["published"] is False and not cycle["mlflow"]
    cfg = load_config(out / "params.resolved.yaml")
    loop.prepare(cfg, ws, Runner())  # what every run does first
    (cycle,) = ws.load_ledger().cycles
    assert cycle["published"] is True
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow/mlflow.db")
    (version,) = client.search_model_versions("name = 'ws-digits'")
    assert int(version.version) == cycle["mlflow"]["model_version"]
    aliases = client.get_model_version("ws-digits", version.version).aliases
    assert "challenger" in aliases


def test_killed_between_publish_and_alias_move_the_next_run_finishes_it(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    killed = _run(out, "publish:recorded")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    from mlflow import MlflowClient

    # (never mlflow.set_tracking_uri here: it would leak into kcm's own store resolution)
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow/mlflow.db")
    ws = Workspace(out)
    ledger = ws.load_ledger()
    assert len(ledger.cycles) == 1  # committed ...
    mv = ledger.cycles[0]["mlflow"]["model_version"]
    assert not client.get_model_version("ws-digits", str(mv)).aliases  # ... aliases not moved

    cfg = load_config(out / "params.resolved.yaml")
    sync_champion(cfg, ws)  # what every run does first
    aliases = client.get_model_version("ws-digits", str(mv)).aliases
    assert "challenger" in aliases
    if ledger.cycles[0]["gate"]["promote"]:
        assert "champion" in aliases
    assert len(client.search_model_versions("name = 'ws-digits'")) == 1  # not registered twice

    # a version no committed cycle names (as if the run had died just before the ledger
    # write) is refused by promote
    ledger = ws.load_ledger()
    orphan = ledger.cycles.pop()["mlflow"]["model_version"]
    ws.save_ledger(ledger)
    with pytest.raises(KCMError, match="not registered by a committed cycle"):
        promote(cfg, ws, orphan, who="test")
