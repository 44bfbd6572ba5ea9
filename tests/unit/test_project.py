"""A project's names on shared servers (kcm.project): derived, fixed in the ledger, kept by a
moved workspace, new for a copy; a ledger from before projects had names keeps its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kcm.config import load_config
from kcm.errors import ConfigError
from kcm.project import experiment_name, model_name, names, project_name, slug, task_name
from kcm.workspace import Ledger, Workspace


def _ws(root: Path, **fields: object) -> Workspace:
    ws = Workspace(root)
    ws.make_dirs()
    ws.save_ledger(Ledger(**fields))  # type: ignore[arg-type]
    return ws


def test_names_default_to_the_folder_and_the_task(tmp_path: Path) -> None:
    cfg = load_config()
    ws = Workspace(tmp_path / "Fraud Desk_2")  # not created yet: the folder's name
    assert names(cfg, ws) == {
        "project": "fraud-desk-2",
        "model": "fraud-desk-2-digits",
        "experiment": "kcm-fraud-desk-2",
    }
    csv = load_config(overrides=["data.dataset=csv", "data.train=s3://b/tickets.v2.parquet"])
    assert task_name(csv) == "tickets-v2"
    assert slug("///") == "kcm"


def test_settings_win_and_a_bad_project_name_is_one_clear_error(tmp_path: Path) -> None:
    ws = _ws(tmp_path / "a", project="a", model_name="a-digits")
    cfg = load_config(overrides=["project=fraud", "registry.model_name=shared-model"])
    assert project_name(cfg, ws) == "fraud" and model_name(cfg, ws) == "shared-model"
    assert experiment_name(cfg, ws) == "kcm-fraud"
    with pytest.raises(ConfigError, match="'project' = 'Fraud Desk'"):
        load_config(overrides=["project=Fraud Desk"])


def test_a_moved_workspace_keeps_its_names_and_a_copy_gets_its_own(tmp_path: Path) -> None:
    cfg = load_config()
    a = _ws(tmp_path / "a", project="a", model_name="a-digits")
    a.claim_identity()
    b = tmp_path / "b"
    shutil.move(a.root, b)  # moved: same project, same model
    moved = Workspace(b)
    moved.claim_identity()
    assert names(cfg, moved)["model"] == "a-digits"
    c = tmp_path / "c"
    shutil.copytree(b, c)  # copied (the original in place): a project of its own
    copy = Workspace(c)
    assert copy.claim_identity()
    assert names(cfg, copy) == {"project": "c", "model": "c-digits", "experiment": "kcm-c"}
    assert names(cfg, Workspace(b))["model"] == "a-digits"


def test_a_ledger_from_before_project_names_keeps_its_model_and_experiment(
    tmp_path: Path,
) -> None:
    ws = Workspace(tmp_path / "old")
    ws.make_dirs()
    cycles = [{"batch": "b1", "mlflow": {"model_name": "kcm-system", "model_version": 3}}]
    ws.ledger_path.write_text(json.dumps({"workspace_id": "x" * 32, "cycles": cycles}))
    cfg = load_config()
    assert model_name(cfg, ws) == "kcm-system" and experiment_name(cfg, ws) == "kcm"
    assert project_name(cfg, ws) == "old"
