"""The command line's habits (issue #25): ``kcm --version``; runs require an existing workspace
unless ``kcm init`` (or ``--init``) creates one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kcm_app.cli import main


def test_version_prints_the_packages_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    want = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert want and capsys.readouterr().out.strip() == f"kcm {want.group(1)}"


@pytest.mark.parametrize("command", [["continual"], ["serve", "--interval", "60"]])
def test_a_run_on_a_folder_without_a_workspace_is_one_clear_error(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "projcet"  # mistyped: it must not become a new, empty project
    assert main([*command, "--workdir", str(typo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(typo) in err[0] and "kcm init --workdir" in err[0], err
    assert not typo.exists()


def test_init_creates_a_workspace_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from kcm.workspace import Workspace

    ws = tmp_path / "fraud"
    sets = [
        "--set",
        "large.backend=callable",
        "--set",
        "large.callable.target=tests.helpers:digits_large",
    ]
    assert main(["init", "--workdir", str(ws), *sets]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["created"] and made["project"] == "fraud" and made["model"] == "fraud-digits"
    ledger = Workspace(ws).load_ledger()
    assert ledger.project == "fraud" and ledger.challenger == 0
    assert main(["init", "--workdir", str(ws), *sets]) == 0  # again: left as it is
    out = capsys.readouterr()
    assert not json.loads(out.out)["created"] and "already a workspace" in out.err
    assert Workspace(ws).load_ledger().workspace_id == ledger.workspace_id


def test_serve_model_serves_the_projects_champion_with_the_serving_settings(
    tmp_path: Path,
) -> None:
    from kcm.config import load_config
    from kcm.errors import NoWorkspace
    from kcm.workspace import Ledger, Workspace
    from kcm_app.serve_model_cmd import server_command

    cfg = load_config(overrides=["serving.workers=2", "serving.max_rows=50", "serving.port=6001"])
    with pytest.raises(NoWorkspace):
        server_command(cfg, tmp_path / "missing")
    ws = Workspace(tmp_path / "fraud")
    ws.make_dirs()
    ws.save_ledger(Ledger(project="fraud", model_name="fraud-digits"))
    cmd, env = server_command(cfg, ws.root)
    assert cmd[1:5] == ["models", "serve", "-m", "models:/fraud-digits@champion"]
    assert cmd[cmd.index("-w") + 1] == "2" and cmd[cmd.index("-p") + 1] == "6001"
    assert env["KCM_SERVE_MAX_ROWS"] == "50" and env["KCM_SERVE_MAX_BYTES"] == "16000000"
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{ws.root}/mlflow/mlflow.db"
