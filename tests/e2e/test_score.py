"""``kcm score``: a table answered by a workspace's champion in this process, on a local Dask
cluster of 2 workers and (where pyspark is installed) on Spark through MLflow's spark_udf: the
same answers row for row as the registered pyfunc; large-model answers bought once, whatever
the engine; a killed job resumed, never re-paid; another job's output refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kcm.project import model_name
from kcm.workspace import Workspace
from tests import helpers
from tests.helpers import set_args

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SETS = helpers.REGISTERED_DIGITS


def _kcm(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    full.update(env, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "kcm_app.cli", *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A workspace with a registered champion, and a 10,000-row digits table (with ids)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("score")
    made = _kcm("run", "--in-process", "--no-progress", *set_args(*SETS), "--out", str(root / "ws"))
    assert made.returncode == 0, made.stderr[-3000:]
    d = load_digits()
    idx = np.random.default_rng(0).integers(0, len(d.data), 10_000)
    table = pd.DataFrame(d.data[idx], columns=[f"px{i}" for i in range(64)])
    table.insert(0, "id", np.arange(len(table)))
    table.to_parquet(root / "table.parquet", index=False)
    table.to_csv(root / "table.csv", index=False)
    return root / "ws", root


def _score(ws: Path, source: str, out: Path, *extra: str, **env: str) -> dict:
    done = _kcm(
        "score",
        "--workdir",
        str(ws),
        "--input",
        source,
        "--out",
        str(out),
        "--keep",
        "id",
        *set_args(*SETS),
        *extra,
        **env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_engine_gives_the_pyfunc_answers_and_buys_each_answer_once(
    project: tuple[Path, Path], tmp_path: Path
) -> None:
    ws, root = project
    calls = {"KCM_TEST_CALLS": str(tmp_path / "calls.jsonl")}
    local = _score(
        ws, str(root / "table.parquet"), tmp_path / "local", "--partition-rows", "2500", **calls
    )
    assert local["rows"] == 10_000 and local["parts"] == 4
    assert local["answered_by"]["small"] > 0 and local["answered_by"]["large"] > 0
    asked = [h for call in _asked(calls) for h in call]
    assert local["large_requests"] == len(asked) == len(set(asked)) > 0  # counted as sent

    # a local Dask cluster of 2 worker processes, the CSV through an fsspec URL
    dask = _score(
        ws,
        (root / "table.csv").as_uri(),
        tmp_path / "dask",
        "--engine",
        "dask",
        "--workers",
        "2",
        "--partition-rows",
        "2500",
        **calls,
    )
    assert dask["rows"] == 10_000 and dask["parts"] >= 2
    assert dask["large_requests"] == 0, "an answer the workspace bought was bought again"
    assert len([h for c in _asked(calls) for h in c]) == len(asked)
    a, b = pd.read_parquet(tmp_path / "local"), pd.read_parquet(tmp_path / "dask")
    assert (a["id"].to_numpy() == np.arange(10_000)).all()  # the table's order
    _same(a, b)

    # the registered champion, as MLflow loads it: the same answers row for row
    import mlflow

    from kcm.config import load_config

    cfg = load_config(ws / "params.resolved.yaml")
    mlflow.set_tracking_uri(f"sqlite:///{ws}/mlflow/mlflow.db")
    model = mlflow.pyfunc.load_model(f"models:/{model_name(cfg, Workspace(ws))}@champion")
    rows = pd.read_parquet(root / "table.parquet").head(3000)
    served = model.predict(rows.drop(columns=["id"]))
    _same(a.head(3000), served.assign(id=rows["id"]))

    try:
        import pyspark  # noqa: F401
    except ImportError:
        return  # the Spark path: where pyspark is installed (kcm[spark])
    spark = _score(
        ws,
        str(root / "table.parquet"),
        tmp_path / "spark",
        "--engine",
        "spark",
        "--workers",
        "2",
        **calls,
    )
    assert spark["rows"] == 10_000 and spark["large_requests"] == 0
    c = pd.read_parquet(tmp_path / "spark" / "parts").sort_values("id").reset_index(drop=True)
    _same(a, c)


def test_a_killed_job_resumes_without_paying_twice_and_another_jobs_output_is_refused(
    project: tuple[Path, Path], tmp_path: Path
) -> None:
    ws, root = project
    table = pd.read_parquet(root / "table.parquet").head(8000)
    table["px0"] = table["px0"] + 0.5  # inputs the workspace has not bought answers for
    table.to_parquet(tmp_path / "fresh.parquet", index=False)
    calls = {"KCM_TEST_CALLS": str(tmp_path / "calls.jsonl")}
    args = (
        "score",
        "--workdir",
        str(ws),
        "--input",
        str(tmp_path / "fresh.parquet"),
        "--out",
        str(tmp_path / "out"),
        "--keep",
        "id",
        "--partition-rows",
        "2000",
        *set_args(*SETS),
    )
    killed = _kcm(*args, KCM_FAILPOINT="score:part-written", **calls)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == ["part-00000.parquet"]
    again = _kcm(*args, **calls)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert summary["parts"] == 3 and summary["parts_resumed"] == 1  # the three missing
    out = pd.read_parquet(tmp_path / "out")
    assert (out["id"].to_numpy() == table["id"].to_numpy()).all()
    asked = [h for call in _asked(calls) for h in call]
    assert asked and len(asked) == len(set(asked)), "an input was paid for twice"

    other = _kcm(*args[:4], str(root / "table.parquet"), *args[5:])
    assert other.returncode == 2 and "holds the answers of another scoring job" in other.stderr


def _asked(env: dict[str, str]) -> list[list[str]]:
    os.environ["KCM_TEST_CALLS"] = env["KCM_TEST_CALLS"]
    try:
        return helpers.inputs_asked()
    finally:
        del os.environ["KCM_TEST_CALLS"]


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b)
    assert (a["id"].to_numpy() == b["id"].to_numpy()).all()
    assert (a["answer"].to_numpy() == b["answer"].to_numpy()).all()
    assert (a["answered_by"].to_numpy() == b["answered_by"].to_numpy()).all()
    assert np.allclose(a["confidence"], b["confidence"], atol=1e-6)
