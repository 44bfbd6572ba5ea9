"""One answering path and settings that take effect, on a real digits workspace.

The workspace steps (route -> call_large in chunks -> assemble) and ``system.predict`` give the
same labels, routing, hints and answer-cache keys; a run setting changed on an existing
workspace changes the next cycle (and is what MLflow records); a frozen one is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kcm import loop, steps
from kcm.config import KCMConfig, load_config
from kcm.errors import ConfigError
from kcm.steps.systems import champion
from kcm.workspace import Workspace

pytestmark = pytest.mark.slow

BASE = [
    "large.backend=callable",
    "large.callable.target=tests.helpers:digits_large",
    "judge.epochs=20",
    "data.stream.n_batches=3",
    "registry.enabled=false",
    "dvc.enabled=false",
    "eval.plots=false",
    "flow.large_chunk_size=7",
]


def _cfg(*extra: str) -> KCMConfig:
    return load_config(None, [*BASE, *extra])


def _feed(cfg: KCMConfig, ws: Workspace, batch: int) -> None:
    feed = ws.root.parent / "feed"
    if not feed.is_dir():
        steps.feed(cfg, feed)
    Path(ws.inbox).mkdir(parents=True, exist_ok=True)
    shutil.copy(feed / f"batch-{batch:03d}.csv", Path(ws.inbox) / f"batch-{batch:03d}.csv")


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace that has learned one batch (so the judge routes and hints are sent)."""
    root = tmp_path_factory.mktemp("one-path")
    ws = Workspace(root / "ws")
    cfg = _cfg()
    _feed(cfg, ws, 0)
    loop.run(cfg, ws)
    return ws


def test_workspace_steps_and_predict_answer_identically(learned: Workspace, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(learned.root, ws.root)
    cfg = _cfg()
    _feed(cfg, Workspace(learned.root), 1)
    shutil.move(str(Path(learned.inbox) / "batch-001.csv"), Path(ws.inbox) / "batch-001.csv")
    name = steps.ingest(ws, cfg)["pending"][0]
    assert steps.validate(cfg, ws, name)["ok"]
    r = steps.route(cfg, ws, name)
    assert len(r["chunks"]) > 1, "several chunks, as the flows run them"
    for start, end in r["chunks"]:
        steps.call_large(cfg, ws, name, start, end)
    system = champion(ws, cfg)
    batch = ws.load_batch(name)
    via_steps = steps.assemble(ws, name, system, batch)
    via_predict = system.predict(batch)

    assert via_steps.to_large.any() and not via_steps.to_large.all()
    np.testing.assert_array_equal(via_steps.to_large, via_predict.to_large)
    np.testing.assert_array_equal(via_steps.answer, via_predict.answer)
    np.testing.assert_array_equal(via_steps.answered_by, via_predict.answered_by)
    np.testing.assert_array_equal(via_steps.large_keys, via_predict.large_keys)
    np.testing.assert_allclose(via_steps.confidence, via_predict.confidence)
    np.testing.assert_allclose(via_steps.hints, via_predict.hints)  # NaN where not routed
    assert via_steps.epsilon == via_predict.epsilon
    # the hint sent is the prior-free one (large.hint_prior: balanced), not the raw output
    idx = np.flatnonzero(via_steps.to_large)
    np.testing.assert_allclose(via_steps.hints[idx], system.hint_of(via_steps.small_proba[idx]))
    assert not np.allclose(via_steps.hints[idx], via_steps.small_proba[idx])
    with np.load(ws.run_dir(name) / "route.npz") as recorded:
        np.testing.assert_allclose(recorded["hints"], via_predict.hints)


def test_a_run_setting_takes_effect_on_an_existing_workspace(
    learned: Workspace, tmp_path: Path
) -> None:
    runs = {}
    for eps in (0.98, 0.5):
        ws = Workspace(tmp_path / f"eps{eps}")
        shutil.copytree(learned.root, ws.root)
        cfg = _cfg(f"routing.epsilon={eps}", "registry.enabled=true", "eval.kan_plot_inputs=0")
        _feed(cfg, ws, 1)
        runs[eps] = loop.run(cfg, ws)
    low, high = runs[0.5]["cycles"][-1], runs[0.98]["cycles"][-1]
    assert (low["epsilon"], high["epsilon"]) == (0.5, 0.98)
    assert low["large_call_rate"] < high["large_call_rate"]
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'eps0.5'}/mlflow/mlflow.db")
    run = mlflow.get_run(low["mlflow"]["run_id"])
    assert run.data.params["routing.epsilon"] == "0.5"  # what MLflow records is what ran


def test_a_frozen_setting_is_refused_with_one_line(learned: Workspace, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(learned.root, ws.root)
    with pytest.raises(ConfigError, match=r"judge\.kind='mlp' \(built with 'kan'\)") as err:
        loop.run(_cfg("judge.kind=mlp"), ws)
    assert "\n" not in str(err.value)
    from kcm_app.cli import main

    assert (
        main(["run", "--in-process", "--out", str(ws.root), "--set", "features.judge_dim=8"]) == 2
    )


def test_every_processed_batch_has_its_answers_delivered(learned: Workspace) -> None:
    import pandas as pd

    ledger = learned.load_ledger()
    name = ledger.with_status("processed")[0]
    path = learned.root / "data" / "answers" / f"{name.rsplit('.', 1)[0]}.csv"
    answers = pd.read_csv(path, keep_default_na=False, dtype={"label": str, "id": str})
    batch = learned.load_batch(name)
    assert list(answers.columns) == [
        "id",
        "label",
        "confidence",
        "answered_by",
        "large_error",
        "cost",
    ]
    assert (answers.loc[answers["answered_by"] != "large", "cost"] == 0).all()
    assert [str(i) for i in answers["id"]] == [str(i) for i in batch.ids]
    assert set(answers["label"]) <= set(learned.task().label_names)
    assert set(answers["answered_by"]) <= {"small", "large", "small-fallback"}
    cycle = ledger.cycles[0]
    assert (answers["answered_by"] != "small").sum() == cycle["large_calls"]
    assert cycle["answers"] == str(path.relative_to(learned.root))  # the workspace may move
