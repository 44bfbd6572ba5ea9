"""The fault suite, part 6: a fault of the environment never costs a batch (issue #23).

A damaged answer store is set aside and the batch goes through; a damaged, replaced or
deleted ledger stops the run naming the backup (``kcm doctor --repair`` restores it) instead
of starting the project over; MLflow failing after the commit leaves the batch processed and
the next run publishes it; an error of a resource is never counted against a batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kcm import doctor, events, loop, steps
from kcm.config import load_config
from kcm.errors import EnvironmentFault
from kcm.workspace import LedgerDamaged, Workspace
from tests.helpers import QUIET, TINY_DIGITS, openai_digits

pytestmark = pytest.mark.slow

BASE = [*TINY_DIGITS, "data.stream.n_batches=3", "flow.max_attempts=2"]


def _workspace(tmp_path: Path, batches: int = 1, *extra: str) -> tuple[object, Workspace]:
    """A workspace that processed ``batches`` batches, with the rest of the stream waiting
    in a side folder (``tmp_path/later``)."""
    cfg = load_config(None, [*BASE, *extra])
    ws = Workspace(tmp_path / "ws")
    later = tmp_path / "later"
    steps.feed(cfg, later)
    for f in sorted(later.iterdir())[:batches]:
        Path(ws.inbox).mkdir(parents=True, exist_ok=True)
        f.rename(Path(ws.inbox) / f.name)
    loop.run(cfg, ws)
    return cfg, ws


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workspace that processed 2 batches, the third waiting aside: each test below works
    on a copy (a copy elsewhere is a workspace of its own)."""
    root = tmp_path_factory.mktemp("prepared")
    _workspace(root, 2)
    return root


def _copy(prepared: Path, tmp_path: Path) -> tuple[object, Workspace]:
    for part in ("ws", "later"):
        shutil.copytree(prepared / part, tmp_path / part)
    return load_config(None, BASE), Workspace(tmp_path / "ws")


def _send_next(tmp_path: Path, ws: Workspace) -> str:
    f = sorted((tmp_path / "later").iterdir())[0]
    f.rename(Path(ws.inbox) / f.name)
    return f.name


@pytest.mark.parametrize("damage", ["header", "empty"])
def test_a_damaged_answer_store_is_set_aside_and_the_batch_goes_through(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture, prepared: Path
) -> None:
    cfg, ws = _copy(prepared, tmp_path)
    store = ws.state / "large_cache.sqlite"
    assert store.is_file()
    if damage == "header":
        with open(store, "r+b") as fh:
            fh.write(b"this is no database")
    else:
        store.write_bytes(b"")
    _send_next(tmp_path, ws)
    report = loop.run(cfg, ws)
    assert report["run"]["processed"] and not report["run"]["quarantined"]
    aside = list(ws.state.glob("large_cache.sqlite.damaged-*"))
    assert len(aside) == 1  # kept, never deleted
    assert "paid again" in caplog.text and "kept aside" in caplog.text
    assert all(r.failures == 0 for r in ws.load_ledger().batches.values())


@pytest.mark.parametrize("damage", ["emptied", "truncated", "deleted"])
def test_a_damaged_ledger_stops_the_run_and_doctor_restores_the_backup(
    tmp_path: Path, damage: str, prepared: Path
) -> None:
    cfg, ws = _copy(prepared, tmp_path)
    before = ws.load_ledger()
    systems = sorted(p.name for p in (ws.state / "systems").iterdir())
    if damage == "emptied":
        ws.ledger_path.write_text("{}")
    elif damage == "truncated":
        ws.ledger_path.write_text(ws.ledger_path.read_text()[:300])
    else:
        ws.ledger_path.unlink()
    _send_next(tmp_path, ws)
    with pytest.raises(LedgerDamaged, match=r"ledger.json .*kcm doctor --repair"):
        loop.run(cfg, ws)
    # nothing started over: the saved systems are all there
    assert sorted(p.name for p in (ws.state / "systems").iterdir()) == systems
    assert any(f.level == "fatal" for f in doctor.check(ws))
    done = doctor.repair(ws)
    assert any("ledger restored" in f.what for f in done), done
    assert not any(f.level == "fatal" for f in done)
    restored = ws.load_ledger()
    assert restored.workspace_id == before.workspace_id
    assert restored.with_status("processed") == before.with_status("processed")
    report = loop.run(cfg, ws)  # the batch that waited is processed, under a new number
    assert len(report["run"]["processed"]) == 1
    seqs = [n[:4] for n in ws.load_ledger().order]
    assert len(seqs) == len(set(seqs)) == 3


def test_mlflow_failing_after_the_commit_costs_nothing_and_the_next_run_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg, ws = _workspace(tmp_path, 1, "registry.enabled=true", f"registry.tracking_uri={uri}")
    from kcm.adapters import mlflow_tracking

    real = mlflow_tracking.track_cycle

    def down(*a: object, **k: object) -> None:
        raise MlflowException("API request to the tracking server failed: connection refused")

    monkeypatch.setattr(mlflow_tracking, "track_cycle", down)
    name = _send_next(tmp_path, ws)
    with pytest.raises(EnvironmentFault, match=r"MLflow failed during publish"):
        loop.run(cfg, ws)
    ledger = ws.load_ledger()
    rec = next(r for n, r in ledger.batches.items() if name[:-4] in n)
    assert rec.status == "processed" and rec.failures == 0  # committed, counted nothing
    assert ledger.cycles[-1]["published"] is False
    fault = [e for e in events.recorded(ws) if e["event"] == "kcm.environment.fault"]
    assert fault and fault[-1]["step"] == "publish"

    monkeypatch.setattr(mlflow_tracking, "track_cycle", real)
    loop.run(cfg, ws)  # publishes first
    cycles = ws.load_ledger().cycles
    assert all(c.get("published", True) for c in cycles)
    assert cycles[-1]["mlflow"]["model_version"] == 2


def test_a_disk_error_in_a_step_waits_instead_of_quarantining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared: Path
) -> None:
    import errno

    cfg, ws = _copy(prepared, tmp_path)
    real = steps.learn

    def full(*a: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(ws.state / "systems"))

    monkeypatch.setattr(steps, "learn", full)
    name = _send_next(tmp_path, ws)
    for _ in range(3):  # more than flow.max_attempts: still nothing counted
        with pytest.raises(EnvironmentFault, match=r"the disk is full: free space on it"):
            loop.run(cfg, ws)
    rec = next(r for n, r in ws.load_ledger().batches.items() if name[:-4] in n)
    assert rec.status == "ingested" and rec.failures == 0
    monkeypatch.setattr(steps, "learn", real)
    assert loop.run(cfg, ws)["run"]["processed"]


def test_temp_files_of_interrupted_writes_are_removed_on_start(
    tmp_path: Path, prepared: Path
) -> None:
    cfg, ws = _copy(prepared, tmp_path)
    stale = ws.state / ".ledger.json.deadbeef.tmp"
    stale.write_text("{")
    loop.run(cfg, ws)
    assert not stale.exists()
    assert json.loads(ws.ledger_path.read_text())["order"]


def test_an_endpoint_failing_throughout_ends_the_run_with_status_3_through_the_flows(
    tmp_path: Path,
) -> None:
    """Every request answered 500: the circuit opens, the small model answers, and the run
    says so (exit status 3, a ``kcm.endpoint.down`` event) through the flows too (they used to
    die on the summary's missing figures; in-process: tests/e2e/test_cli_run.py)."""
    from kcm_app.cli import main
    from tests.llm_server import LLMServer

    out = tmp_path / "o"
    with LLMServer([str(i) for i in range(10)], status=500) as srv:
        args = [
            "run",
            "--no-progress",
            "--out",
            str(out),
            *openai_digits(srv.base_url, *QUIET),
        ]
        assert main(args) == 3
    ws = Workspace(out)
    assert len(ws.load_ledger().with_status("processed")) == 2  # answered, by the small model
    assert "kcm.endpoint.down" in [e["event"] for e in events.recorded(ws)]
