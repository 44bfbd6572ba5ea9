"""kcm.scoring's parts that need no model: engines as registry rows (imported lazily), a job's
identity, its output folder claimed or refused, its usage summed, a table read in parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kcm import registry
from kcm.errors import DataError, KCMError
from kcm.scoring import ScoreJob, Scorer, job_id, prepare_output, read_parts, record_usage, usage


@pytest.mark.parametrize("name", sorted(registry.ENGINES))
def test_every_engine_is_a_row_built_from_plain_settings(name: str) -> None:
    engine = registry.load("score.engine", name)(None, 2)
    assert engine.workers == 2 and engine.address is None and callable(engine.run)


def test_engines_load_their_cluster_libraries_only_when_they_run() -> None:
    code = (
        "import sys, kcm.adapters.dask_engine, kcm.adapters.spark_engine, kcm.scoring\n"
        "print(sorted(m for m in ('dask', 'distributed', 'pyspark') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_engine_names_the_choices() -> None:
    with pytest.raises(KCMError, match="choose one of dask, local, spark"):
        registry.check("score.engine", "ray")


def _job(tmp_path: Path, source: Path, job: str) -> ScoreJob:
    return ScoreJob(str(source), str(tmp_path / "out"), Scorer(str(tmp_path), {}, 1, job))


def test_a_job_is_its_input_output_champion_settings_and_cut(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a\n1\n")
    first = job_id(str(table), "out", 3, {"x": 1}, ["local", 100])
    assert first == job_id(str(table), "out", 3, {"x": 1}, ["local", 100])
    assert first != job_id(str(table), "out", 4, {"x": 1}, ["local", 100])
    assert first != job_id(str(table), "out", 3, {"x": 1}, ["local", 50])
    assert first != job_id(str(table), "out", 3, {"x": 1}, ["dask", 100])
    assert first != job_id(str(table), "out2", 3, {"x": 1}, ["local", 100])
    with pytest.raises(DataError, match="does not exist"):
        job_id(str(tmp_path / "missing.csv"), "out", 3, {}, 100)


def test_the_output_is_claimed_resumed_by_its_job_and_refused_to_another(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a\n1\n")
    prepare_output(_job(tmp_path, table, "job-a"), "local")
    (tmp_path / "out" / "part-00000.parquet").write_bytes(b"x")
    (tmp_path / "out" / "_tmp-123-part-00001.parquet").write_bytes(b"torn")
    again = _job(tmp_path, table, "job-a")
    prepare_output(again, "local")
    assert again.done == {0}  # the whole part; the torn one is written again
    assert not (tmp_path / "out" / "_tmp-123-part-00001.parquet").exists()
    with pytest.raises(KCMError, match="holds the answers of another scoring job"):
        prepare_output(_job(tmp_path, table, "job-b"), "local")


def test_usage_sums_every_partitions_line(tmp_path: Path) -> None:
    record_usage(tmp_path, "j", {"calls": 3, "cache_hits": 1, "cost": 0.5})
    record_usage(tmp_path, "j", {"calls": 2, "cache_hits": 0, "cost": 0.25, "refused": 1})
    assert usage(tmp_path, "j") == {"calls": 5, "cache_hits": 1, "cost": 0.75, "refused": 1}
    assert usage(tmp_path, "other")["calls"] == 0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_is_read_in_parts_of_the_rows_asked(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"id": range(10), "x": [float(i) for i in range(10)]})
    path = tmp_path / f"t{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    parts = list(read_parts(str(path), 4))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert pd.concat(parts)["id"].tolist() == list(range(10))
    assert json.dumps(parts[0]["x"].tolist()) == "[0.0, 1.0, 2.0, 3.0]"


def test_one_process_per_scoring_job_and_the_workspace_stays_free(tmp_path: Path) -> None:
    from kcm.lock import WorkspaceBusy, exclusive

    with exclusive(tmp_path, lock="scores/job-abc.lock"):
        with (
            pytest.raises(WorkspaceBusy, match=r"job-abc in .* is running in another process"),
            exclusive(tmp_path, lock="scores/job-abc.lock"),
        ):
            pass
        with exclusive(tmp_path):  # a continual run may go on beside a scoring job
            pass


def test_the_servers_limits_apply_in_the_scoring_server_only() -> None:
    """spark_udf imports MLflow's scoring_server (its client), never its app: a Spark batch
    of 50,000 rows must not meet the HTTP server's row limit."""
    code = (
        "import mlflow.pyfunc.scoring_server, kcm.adapters.mlflow_pyfunc as m\n"
        "m.guard_scoring_server(); m.check_rows(50_000); print('no limit')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "no limit"
