"""End-to-end: MLflow tracking and registry, the promotion gate and DVC data versioning, with a
temporary SQLite tracking store, a temporary DVC repo and a local DVC remote."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from kcm import loop, steps
from kcm.config import KCMConfig, load_config
from kcm.project import model_name
from kcm.steps.systems import champion
from kcm.workspace import Workspace
from tests import helpers
from tests.conftest import REPO

pytestmark = pytest.mark.slow

BASE = [
    "large.backend=callable",
    "large.callable.target=tests.helpers:digits_large",
    "judge.epochs=20",
    "data.stream.n_batches=3",
    "eval.kan_plot_inputs=4",
]


def _workspace(root: Path, *extra: str) -> tuple[KCMConfig, Workspace]:
    cfg = load_config(None, [*BASE, f"flow.workdir={root / 'ws'}", *extra])
    return cfg, Workspace(root / "ws", cfg.flow.inbox)


def _feed(cfg: KCMConfig, ws: Workspace, batches: list[int]) -> None:
    tmp = ws.root.parent / "feed"
    steps.feed(cfg, tmp)
    Path(ws.inbox).mkdir(parents=True, exist_ok=True)
    for b in batches:
        shutil.copy(tmp / f"batch-{b:03d}.csv", Path(ws.inbox) / f"batch-{b:03d}.csv")


def _client(ws: Workspace) -> Any:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{ws.root}/mlflow/mlflow.db")
    return MlflowClient()


@pytest.fixture(scope="module")
def two_cycles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KCMConfig, Workspace]]:
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg, ws = _workspace(root)
        _feed(cfg, ws, [0, 1])
        loop.run(cfg, ws)
        yield cfg, ws


def test_two_cycles_are_tracked_registered_and_their_data_versioned(
    two_cycles: tuple[KCMConfig, Workspace], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, ws = two_cycles
    ledger = ws.load_ledger()
    c = _client(ws)
    name = model_name(cfg, ws)
    versions = {int(v.version): v for v in c.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == [1, 2]
    aliases = c.get_registered_model(name).aliases
    assert str(aliases["challenger"]) == "2"
    gates = [cy["gate"]["promote"] for cy in ledger.cycles]
    assert gates[0] is True  # the first version becomes champion
    assert str(aliases["champion"]) == ("2" if gates[1] else "1")
    assert versions[2].tags["kcm.gate"] == ("promote" if gates[1] else "refuse")
    assert "Few-group accuracy" in versions[2].tags["kcm.gate_reasons"]
    assert ledger.champion == ledger.cycles[1 if gates[1] else 0]["version"]

    # one MLflow run per cycle, nested under the continual run, metrics stepped by cycle
    runs = {int(v.tags["kcm.system_version"]): c.get_run(v.run_id) for v in versions.values()}
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs.values()}
    assert len(parents) == 1
    parent = c.get_run(parent_id := parents.pop())
    assert parent.info.status == "FINISHED"
    assert parent.data.params["routing.epsilon"] == "0.98"  # the run's settings
    for key in (
        "traffic_accuracy",
        "traffic_large_call_rate",
        "balanced_accuracy_few",
        "large_calls",
    ):
        assert sorted(m.step for m in c.get_metric_history(parent_id, key)) == [0, 1], key
    assert [m.step for m in c.get_metric_history(parent_id, "bwt")] == [1]  # from cycle 1 on
    for v in versions.values():  # the batch as an MLflow dataset input, DVC md5 as digest
        inputs = c.get_run(v.run_id).inputs.dataset_inputs
        batch = v.tags["kcm.batch"]
        assert [i.dataset.name for i in inputs] == [batch]
        assert inputs[0].dataset.digest == ledger.batches[batch].dvc_md5
        assert {t.key: t.value for t in inputs[0].tags}["dvc_file"] == ledger.batches[
            batch
        ].dvc_file
        assert f"batch {batch}" in v.description and (
            "promoted" in v.description or "refused" in v.description
        )
        model = c.get_logged_model(v.source.rsplit("/", 1)[-1])  # the LoggedModel has metrics
        assert {m.key for m in model.metrics} >= {"traffic_accuracy", "traffic_large_call_rate"}
    assert "predict(df)" in c.get_registered_model(name).description
    history = c.get_metric_history(versions[2].run_id, "traffic_accuracy")
    assert [m.step for m in history] == [1]
    for key in (
        "traffic_accuracy_few",
        "traffic_large_call_rate",
        "traffic_baseline_large_only",
        "balanced_baseline_small_only",
        "bwt",
        "forgetting_few",
        "large_calls",
    ):
        assert key in runs[ledger.cycles[1]["version"]].data.metrics, key
    run = c.get_run(versions[2].run_id)
    assert run.data.params["routing.epsilon"] == "0.98"
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"report.json", "lineage.json", "gate.json", "per_class_accuracy.csv"} <= arts
    plots = {a.path for a in c.list_artifacts(run.info.run_id, "plots")}
    assert {
        "plots/tradeoff.png",
        "plots/accuracy_matrix.png",
        "plots/reliability.png",
        "plots/kan_judge.png",
    } <= plots

    # every batch: a .dvc file, the object in the local remote, the md5 in the run's tags
    for i, batch in enumerate(ledger.order):
        info = ledger.batches[batch]
        assert info.dvc_file is not None and (ws.root / info.dvc_file).is_file()
        md5 = info.dvc_md5
        assert md5 is not None
        assert (ws.root / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
        v = next(v for v in versions.values() if v.tags["kcm.batch"] == batch)
        assert c.get_run(v.run_id).data.tags["kcm.batch_dvc_md5"] == md5
        assert i == int(v.version) - 1

    # the data a version saw can be restored from the remote (no local copy, no cache)
    from kcm.adapters.dvc_store import restore

    first = ledger.order[0]
    (ws.batches / first).unlink()
    shutil.rmtree(ws.root / ".dvc" / "cache")
    restored = restore(ws.root, str(ledger.batches[first].dvc_file))
    assert hashlib.sha256(restored.read_bytes()).hexdigest() == ledger.batches[first].sha256

    # kcm lineage names the batches, their DVC hashes and the code commit
    from kcm_app.cli import main

    capsys.readouterr()
    assert main(["lineage", "--workdir", str(ws.root), "--version", "2"]) == 0
    out = capsys.readouterr().out
    for batch in ledger.order:
        assert batch in out
        assert str(ledger.batches[batch].dvc_md5) in out
    assert "code commit:" in out
    assert main(["lineage", "--workdir", str(ws.root), "--version", "7"]) == 2
    assert "has no version 7; registered versions: [1, 2]" in capsys.readouterr().err


def _traffic_rows(ws: Workspace, n: int = 25) -> pd.DataFrame:
    df = pd.read_parquet(ws.eval_dir / "traffic.parquet").head(n)
    return df.drop(columns=[c for c in df.columns if c == "label" or c.endswith("__eval")])


def test_champion_loads_in_a_fresh_process_and_answers_like_the_workspace(
    two_cycles: tuple[KCMConfig, Workspace], tmp_path: Path
) -> None:
    _cfg, ws = two_cycles
    rows = _traffic_rows(ws)
    got = helpers.champion_answers_in_a_fresh_process(ws.root, rows, tmp_path)
    assert list(got.columns) == ["answer", "confidence", "answered_by", "cost"]
    assert len(got) == len(rows)
    assert set(got["answered_by"]) <= {"small", "large", "small-fallback", "small-budget"}
    assert (got.loc[got["answered_by"] == "small", "cost"] == 0).all()
    from kcm.data.batch import batch_from_frame

    system = champion(ws, _cfg)
    task = system.task
    want = system.predict(batch_from_frame(rows.assign(label=None), task, "rows"))
    assert got["answer"].tolist() == [task.label_names[i] for i in want.answer]
    np.testing.assert_allclose(got["confidence"], want.confidence, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_models_serve_answers_with_the_routing_applied(
    two_cycles: tuple[KCMConfig, Workspace], tmp_path: Path
) -> None:
    """``kcm serve-model``: the champion behind MLflow's scoring server, 2 worker processes,
    kcm's request limits (rows: 400, bytes: 413, each naming the limit)."""
    _cfg, ws = two_cycles
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    log = (tmp_path / "serve.log").open("w")
    limits = ["--workers", "2", "--port", str(port), "--max-rows", "20"]
    limits += ["--set", "serving.max_bytes=400000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kcm_app.cli", "serve-model", "--workdir", str(ws.root), *limits],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        helpers.wait_for_ping(proc, port, tmp_path / "serve.log", timeout=180)
        rows = _traffic_rows(ws, 10)
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 10
        names = set(ws.task().label_names)
        for p in preds:
            assert str(p["answer"]) in names
            assert 0.0 <= p["confidence"] <= 1.0
            assert p["answered_by"] in {"small", "large", "small-fallback"}
        # malformed requests: a 4xx that names the problem, never a stack trace
        missing = {"dataframe_split": {"columns": ["nope"], "data": [[1.0]]}}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=missing, timeout=60)
        assert 400 <= r.status_code < 500, r.text
        assert "nope" in r.text and "Traceback" not in r.text and str(REPO) not in r.text
        r = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert 400 <= r.status_code < 500, r.text
        deep = b"[" * 100_000 + b"]" * 100_000  # RecursionError in MLflow's parser: was a 500
        r = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=deep,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert 400 <= r.status_code < 500 and "nested too deeply" in r.text, r.text[:500]
        col = ws.task().input_cols[0]
        word = json.loads(json.dumps(body))
        word["dataframe_split"]["data"][0][word["dataframe_split"]["columns"].index(col)] = "abc"
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=word, timeout=60)
        assert 400 <= r.status_code < 500 and "Traceback" not in r.text, r.text[:500]
        many = _traffic_rows(ws, 21)  # one row over the limit
        over = {"dataframe_split": json.loads(many.to_json(orient="split", index=False))}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=over, timeout=60)
        assert r.status_code == 400 and "at most 20" in r.text and "kcm score" in r.text, r.text
        big = b'{"dataframe_split": {"columns": [], "data": []}, "pad": "' + b"x" * 400_001 + b'"}'
        r = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=big,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert r.status_code == 413 and "at most 400000" in r.text, r.text[:500]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_promote_and_rollback_by_hand_are_recorded(
    two_cycles: tuple[KCMConfig, Workspace], capsys: pytest.CaptureFixture[str]
) -> None:
    from kcm_app.cli import main

    cfg, ws = two_cycles
    c = _client(ws)
    name = model_name(cfg, ws)
    before = int(c.get_model_version_by_alias(name, "champion").version)
    other = 2 if before == 1 else 1
    assert main(["promote", "--workdir", str(ws.root), "--version", str(other), "--who", "ci"]) == 0
    assert int(c.get_model_version_by_alias(name, "champion").version) == other
    mv = c.get_model_version(name, str(other))
    assert mv.tags["kcm.manual_promotion"].startswith("by ci")
    assert ws.load_ledger().champion == int(mv.tags["kcm.system_version"])
    assert main(["rollback", "--workdir", str(ws.root), "--who", "ci"]) == 0
    assert int(c.get_model_version_by_alias(name, "champion").version) == before
    assert "rollback" in " ".join(c.get_model_version(name, str(before)).tags)
    assert main(["promote", "--workdir", str(ws.root), "--version", "9"]) == 2
    assert "no version 9" in capsys.readouterr().err


def test_an_alias_moved_in_mlflow_is_what_the_next_run_serves(
    two_cycles: tuple[KCMConfig, Workspace],
) -> None:
    """MLflow's champion alias is the authority: moved by hand (as in the MLflow UI), the
    ledger adopts it at the start of the next run; the two never disagree afterwards."""
    cfg, ws = two_cycles
    c = _client(ws)
    name = model_name(cfg, ws)
    before = c.get_model_version_by_alias(name, "champion")
    other = c.get_model_version(name, "2" if before.version == "1" else "1")
    c.set_registered_model_alias(name, "champion", other.version)
    try:
        loop.run(cfg, ws)  # an empty inbox: nothing to process, the champion is reconciled
        assert ws.load_ledger().champion == int(other.tags["kcm.system_version"])
        assert champion(ws, cfg).cycle_ == int(other.tags["kcm.system_version"])
    finally:
        c.set_registered_model_alias(name, "champion", before.version)
        steps.sync_champion(cfg, ws)
    assert ws.load_ledger().champion == int(before.tags["kcm.system_version"])


def test_the_gate_refuses_a_challenger_that_is_worse_on_the_few_group(tmp_path: Path) -> None:
    """Cycle 2 teaches the Few classes wrong labels: the challenger is registered, tagged with
    the refusal and its reason, and champion stays where it was."""
    from sklearn.datasets import load_digits

    cfg, ws = _workspace(tmp_path)
    _feed(cfg, ws, [0])
    loop.run(cfg, ws)
    meta = ws.meta()
    few = [int(k) for k, g in meta["groups"].items() if g == "few"]
    many = [int(k) for k, g in meta["groups"].items() if g == "many"]
    assert few and many
    d = load_digits()
    pick = np.flatnonzero(np.isin(d.target, few))
    cols = meta["task"]["feature_cols"]
    poison = pd.DataFrame(d.data[pick] / 16.0, columns=cols)
    poison.insert(0, "id", [f"poison-{i}" for i in pick])
    poison["label"] = str(many[0])  # every Few-class image labelled as one Many class
    Path(ws.inbox).mkdir(parents=True, exist_ok=True)
    poison.to_csv(Path(ws.inbox) / "poisoned.csv", index=False)
    loop.run(cfg, ws)

    ledger = ws.load_ledger()
    gate = ledger.cycles[1]["gate"]
    assert gate["promote"] is False
    c = _client(ws)
    name = model_name(cfg, ws)
    mv = c.get_model_version(name, "2")
    assert mv.tags["kcm.gate"] == "refuse"
    assert "Few-group accuracy" in mv.tags["kcm.gate_reasons"]
    assert "REFUSED" in mv.tags["kcm.gate_reasons"].split("Few-group accuracy")[1].split(";")[0]
    assert str(c.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(c.get_model_version_by_alias(name, "challenger").version) == "2"
    assert ledger.champion == ledger.cycles[0]["version"]
    report = json.loads((ws.state / "reports" / f"{Path(ledger.order[1]).stem}.json").read_text())
    assert report["gate"]["promote"] is False
