"""`kcm bench` on a tiny digits configuration: the JSON schema and the sanity of the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kcm.bench import METHODS, METRICS, ROUTERS
from kcm_app.cli import main

pytestmark = pytest.mark.slow


def test_bench_writes_the_schema_and_the_oracle_bounds_the_routers(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = [
        "bench",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--no-progress",
        "--throughput-n",
        "200",
        "--set",
        "data.stream.n_batches=2",
        "--set",
        "judge.epochs=15",
    ]
    assert main(args) == 0
    result = json.loads((out / "bench.json").read_text())
    assert {"dataset", "machine", "config", "rows"} <= set(result)
    assert result["dataset"] == "digits"
    assert [r["method"] for r in result["rows"]] == list(METHODS)
    rows = {r["method"]: r for r in result["rows"]}
    for row in result["rows"]:
        for key in METRICS:
            assert set(row[key]) == {"mean", "std"}, (row["method"], key)
        for key in ("accuracy", "accuracy_balanced", "large_call_rate", "throughput_sps"):
            assert row[key]["mean"] is not None, (row["method"], key)
        assert 0.0 <= row["accuracy"]["mean"] <= 1.0
    for m in ROUTERS:  # routers only: a routing score and its curve
        assert rows[m]["judge_auroc"]["mean"] is not None, m
        assert rows[m]["apgr"]["mean"] is not None, m
        assert rows[m]["accuracy_at_kcm_rate"]["mean"] is not None, m
        assert rows[m]["accuracy_at_budget"]["mean"] is not None, m
    for m in ("kcm", "mcm", "cascade"):
        assert rows[m]["throughput_at_budget_sps"]["mean"] > 0, m
    assert result["budget"] == 0.3
    for m in ("large_only", "small_only", "kd"):
        assert rows[m]["judge_auroc"]["mean"] is None
    assert rows["large_only"]["large_call_rate"]["mean"] == 1.0
    assert rows["small_only"]["large_call_rate"]["mean"] == 0.0
    assert 0.0 < rows["kcm"]["large_call_rate"]["mean"] < 1.0
    assert rows["small_only"]["accuracy"]["mean"] < rows["large_only"]["accuracy"]["mean"]
    assert rows["kd"]["accuracy"]["mean"] <= rows["large_only"]["accuracy"]["mean"] + 0.02
    # at the same large-call rate, on the same small model, nothing beats the oracle
    for m in ("kcm", "cascade", "random"):
        for seed in result["per_seed"]:
            for key in ("accuracy_at_kcm_rate", "accuracy_at_budget"):
                assert seed["methods"]["oracle"][key] >= seed["methods"][m][key] - 1e-9, (
                    m,
                    key,
                    seed["seed"],
                )
    assert rows["oracle"]["judge_auroc"]["mean"] == 1.0
    assert (
        rows["small_only"]["throughput_sps"]["mean"] > rows["large_only"]["throughput_sps"]["mean"]
    )
    md = (out / "BENCH.md").read_text()
    assert "| kcm |" in md and "| oracle |" in md
    assert (out / "tradeoff.png").is_file()
