"""End-to-end: the real kcm-continual / kcm-cycle flows on a temporary Prefect API, with real
Great Expectations validation, in a temporary workspace."""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kcm import steps
from kcm.config import config_to_dict, load_config
from kcm.workspace import Workspace
from tests import helpers

pytestmark = pytest.mark.slow


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> tuple[str, Workspace]:
    monkeypatch.setenv("KCM_TEST_CALLS", str(tmp_path / "calls.json"))
    cfg = load_config(
        None,
        [
            "large.backend=callable",
            "large.callable.target=tests.helpers:digits_large",
            "judge.epochs=20",
            "data.stream.n_batches=3",
            f"flow.workdir={tmp_path / 'ws'}",
            *extra,
        ],
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return str(path), Workspace(tmp_path / "ws", cfg.flow.inbox)


def _feed(config_path: str, ws: Workspace, batches: list[int]) -> None:
    cfg = load_config(config_path)
    tmp = ws.root.parent / "feed"
    steps.feed(cfg, tmp)
    Path(ws.inbox).mkdir(parents=True, exist_ok=True)
    for b in batches:
        (tmp / f"batch-{b:03d}.csv").replace(Path(ws.inbox) / f"batch-{b:03d}.csv")


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _wait_events(name: str, ws: Workspace, n: int, timeout: float = 60) -> list[Any]:
    """The events of that name about this workspace (they reach the API asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline, found = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
        found = [e for e in page.events if e.resource.get("kcm.workspace") == str(ws.root)]
        if len(found) >= n:
            break
        time.sleep(1)
    return found


def test_continual_flow_runs_every_batch_and_the_matrix_grows_across_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None
) -> None:
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client

    from flows.continual import continual_flow

    started = datetime.now(UTC)  # the worker's API also holds the runs of its earlier tests
    config_path, ws = _setup(tmp_path, monkeypatch)
    _feed(config_path, ws, [0, 1])
    # a folder that holds no workspace is refused (kcm init / init=True creates one)
    refused = continual_flow(config_path=config_path, return_state=True)
    assert refused.is_failed() and refused.name == "NoWorkspace", refused
    assert "kcm init" in str(refused.message) and not ws.state.exists()
    state = continual_flow(config_path=config_path, init=True, return_state=True)
    assert state.is_completed(), state.message
    assert len(state.result()["processed"]) == 2
    _feed(config_path, ws, [2])
    state = continual_flow(config_path=config_path, return_state=True)
    assert state.result()["processed"] == [sorted(p.name for p in ws.batches.glob("0002-*"))[0]]
    report = json.loads((ws.state / "report.json").read_text())
    assert [c["cycle"] for c in report["cycles"]] == [0, 1, 2]
    assert len(report["accuracy_matrix"]) == 3  # the matrix continued from the first run
    assert report["cycles"][0]["large_call_rate"] == 1.0
    assert report["final"]["accuracy"] > 0.7
    assert sorted(p.name[:4] for p in ws.batches.glob("*.csv")) == ["0000", "0001", "0002"]
    assert not list(Path(ws.inbox).iterdir())
    # a third run finds nothing new and completes quietly
    assert continual_flow(config_path=config_path, return_state=True).is_completed()
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts()
    keys = {a.key for a in arts}  # the project's own keys (artifact keys are server-wide)
    own = ("cycle", "cycle-plots", "per-class-accuracy", "continual")
    assert {f"kcm-ws-{k}" for k in own} <= keys
    plots = next(a for a in arts if a.key == "kcm-ws-cycle-plots")
    # linked as files (not inlined into the Prefect database): dashboard, trade-off,
    # reliability, matrix, KAN
    links = re.findall(r"\((file://[^)]+\.png)\)", plots.data)
    assert len(links) == 5 and "base64" not in plots.data
    assert all(Path(urllib.parse.urlparse(u).path).is_file() for u in links)
    cycle = next(a for a in arts if a.key == "kcm-ws-cycle")
    assert "promoted" in cycle.data and "MLflow: model `ws-digits`" in cycle.data
    with get_client(sync_client=True) as client:  # tagged, and task runs named by batch
        runs = client.read_flow_runs()
        tasks = client.read_task_runs()
    ours = [r for r in runs if r.created >= started]  # named and tagged by project
    cycles = [r for r in ours if r.name.startswith("ws-cycle-")]
    assert cycles and all({"kcm", "project:ws", "model:ws-digits"} <= set(r.tags) for r in cycles)
    assert all(r.name.startswith("ws-") for r in ours), [r.name for r in ours]
    names = {t.name for t in tasks}
    first = sorted(p.name for p in ws.batches.glob("0000-*.csv"))[0]
    assert {f"validate-{first}", f"route-{first}", f"learn-{first}"} <= names


def test_a_batch_dvc_refuses_stops_the_run_in_one_line_and_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None
) -> None:
    """The workspace is a git checkout whose .gitignore ignores the batches' .dvc files
    (issue #21): the run fails with one line naming the file and the fix (the ingest task's
    message, no traceback), and the batch stays pending with no failure counted against it."""
    import subprocess

    from flows.continual import continual_flow

    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site-cache"))
    config_path, ws = _setup(tmp_path, monkeypatch, "registry.enabled=false", "eval.plots=false")
    ws.root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=ws.root, check=True)
    (ws.root / ".gitignore").write_text("/data/batches/*\n")
    _feed(config_path, ws, [0])
    state = continual_flow(config_path=config_path, init=True, return_state=True)
    assert state.is_failed()
    name = ws.load_ledger().order[0]
    assert str(state.message).startswith(
        f"ingest: DVC refuses data/batches/{name}.dvc because git ignores it "
        "(.gitignore:1:/data/batches/*): remove the pattern that matches it from .gitignore"
    )
    assert "\n" not in str(state.message) and "Traceback" not in str(state.message)
    rec = ws.load_ledger().batches[name]
    assert (rec.status, rec.failures) == ("ingested", 0)


def test_malformed_batches_are_quarantined_and_models_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None
) -> None:
    from flows.continual import continual_flow

    config_path, ws = _setup(tmp_path, monkeypatch)
    _feed(config_path, ws, [0])
    assert continual_flow(config_path=config_path, init=True, return_state=True).is_completed()
    inbox = Path(ws.inbox)
    good = (ws.root.parent / "feed" / "batch-001.csv").read_text()
    header = good.splitlines()[0]
    (inbox / "batch-000a-no-label.csv").write_text(
        "\n".join(",".join(r.split(",")[:-1]) for r in good.splitlines()[:20])
    )
    rows = good.splitlines()[1:20]
    (inbox / "batch-000b-unknown-label.csv").write_text(
        "\n".join([header] + [",".join([*r.split(",")[:-1], "eleven"]) for r in rows])
    )
    (inbox / "batch-000c-empty.csv").write_text("")
    (inbox / "batch-000d-not-csv.csv").write_bytes(bytes(range(256)) * 4)
    _feed(config_path, ws, [1])
    before = _tree_hashes(ws.state / "systems")
    version_before = ws.load_ledger().challenger
    state = continual_flow(config_path=config_path, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert len(result["quarantined"]) == 4 and len(result["processed"]) == 1
    # one kcm.batch.quarantined event each, with what an automation needs
    events = _wait_events("kcm.batch.quarantined", ws, 4)
    assert sorted(e.payload["batch"] for e in events) == sorted(result["quarantined"])
    assert all(e.payload["reason"] and e.resource["kcm.model"] == "ws-digits" for e in events)
    for name in result["quarantined"]:
        assert (ws.quarantine / name).is_file()
        rep = json.loads((ws.quarantine / f"{name}.report.json").read_text())
        assert rep["decision"] == "quarantine" and rep["reason"]
        assert (ws.quarantine / f"{name}.summary.md").read_text().startswith("# Validation")
    reasons = json.dumps(ws.load_ledger().model_dump()["batches"])
    assert "missing column(s) ['label']" in reasons and "unreadable" in reasons
    after = _tree_hashes(ws.state / "systems")
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
    new_versions = {k.split("/")[0] for k in after} - {k.split("/")[0] for k in before}
    assert len(new_versions) == 1  # only the good batch produced a model
    assert ws.load_ledger().challenger == version_before + 1


def test_a_crash_after_the_large_model_step_does_not_pay_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None
) -> None:
    from flows.continual import continual_flow

    config_path, ws = _setup(tmp_path, monkeypatch)
    _feed(config_path, ws, [0])
    real_learn = steps.learn

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash after the large-model step")

    monkeypatch.setattr(steps, "learn", crash)
    state = continual_flow(config_path=config_path, init=True, return_state=True)
    assert state.is_failed()
    name = ws.load_ledger().order[0]
    assert ws.load_ledger().batches[name].status == "ingested"  # still pending
    paid = sum(helpers.calls_made())
    assert paid > 0
    monkeypatch.setattr(steps, "learn", real_learn)
    state = continual_flow(config_path=config_path, return_state=True)
    assert state.is_completed(), state.message
    assert ws.load_ledger().batches[name].status == "processed"
    batch = ws.load_batch(name)
    route = np.load(ws.run_dir(name) / "route.npz")
    hard = {
        hashlib.sha256(np.asarray(batch.inputs[i], np.float32).tobytes()).hexdigest()
        for i in np.flatnonzero(route["to_large"])
    }
    asked = [h for call in helpers.inputs_asked() for h in call]
    assert all(asked.count(h) == 1 for h in hard), "a hard sample was sent to the large model twice"
