"""The fault suite, part 6: a workspace moved or copied to another path goes on there.

A real run (digits, the embedded MLflow store and DVC on) in ``a``; ``a`` is moved to ``b``
and ``b`` copied to ``c``; a run in ``c`` processes its new batch. Nothing is written to the
old path or to the original of the copy, the copy's registry serves its own files, and the
ledger names no path outside its workspace."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kcm.workspace import Workspace
from tests.helpers import set_args

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SETS = (
    "large.backend=callable",
    "large.callable.target=tests.helpers:digits_large",
    "judge.epochs=10",
    "data.stream.n_batches=2",
    "eval.plots=false",
)


def _kcm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "kcm_app.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _locations(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT artifact_location FROM experiments WHERE name LIKE 'kcm%' UNION ALL "
            "SELECT artifact_uri FROM runs UNION ALL SELECT artifact_location FROM logged_models "
            "UNION ALL SELECT storage_location FROM model_versions"
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def test_a_moved_then_copied_workspace_goes_on_at_its_new_path(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    first = _kcm("run", "--in-process", "--no-progress", *set_args(*SETS), "--out", str(a))
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.move(a, b)
    shutil.copytree(b, c, symlinks=True)
    before = _files(b)

    # the stream cut into 3 batches: new contents, so the copy has batches to process
    sets = set_args(*SETS, "data.stream.n_batches=3")
    again = _kcm("run", "--in-process", "--no-progress", *sets, "--out", str(c))
    assert again.returncode == 0, again.stderr[-3000:]

    assert not a.exists(), "something was written at the workspace's old path"
    assert _files(b) == before, "the run in the copy wrote into the original"
    ledger = Workspace(c).load_ledger()
    assert len(ledger.cycles) > 2  # it went on: the copy's new batches were processed
    text = Workspace(c).ledger_path.read_text()
    assert str(tmp_path) not in text, "the ledger names a path outside its workspace"
    art = (c / "mlflow" / "artifacts").as_uri()
    locs = _locations(c / "mlflow" / "mlflow.db")
    assert locs and all(x.startswith(art) or x.startswith("models:/") for x in locs), locs
    con = sqlite3.connect(c / "mlflow" / "mlflow.db")
    models = [r[0] for r in con.execute("SELECT storage_location FROM model_versions")]
    con.close()
    assert models and all(Path(x[len("file://") :]).is_dir() for x in models), models  # servable


def test_registry_commands_on_a_copy_never_touch_the_originals_aliases(tmp_path: Path) -> None:
    """A shared tracking store: ``a`` registers its versions; ``c``, a copy of ``a`` (``a``
    still in place), gets an identity and a model of its own (``c-digits``), so ``kcm promote
    --workdir c`` finds no such version there, pointed at ``a``'s model it is refused one line,
    and the original's champion does not move."""
    from mlflow import MlflowClient

    a, c = tmp_path / "a", tmp_path / "c"
    store = f"sqlite:///{tmp_path}/shared.db"
    sets = set_args(*SETS, "dvc.enabled=false", f"registry.tracking_uri={store}")
    first = _kcm("run", "--in-process", "--no-progress", *sets, "--out", str(a))
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(tracking_uri=store)
    champion = client.get_model_version_by_alias("a-digits", "champion").version
    shutil.copytree(a, c, symlinks=True)
    other = "1" if champion == "2" else "2"
    promoted = _kcm("promote", "--version", other, "--workdir", str(c), *sets)
    assert promoted.returncode == 2, promoted.stderr[-3000:]
    assert "model 'c-digits' has no version" in promoted.stderr
    into = _kcm(*promoted.args[3:], "--set", "registry.model_name=a-digits")
    assert into.returncode == 2, into.stderr[-3000:]
    assert "holds versions of another project" in into.stderr
    assert "Traceback" not in promoted.stderr + into.stderr
    assert client.get_model_version_by_alias("a-digits", "champion").version == champion
    assert Workspace(c).load_ledger().workspace_id != Workspace(a).load_ledger().workspace_id
