"""End-to-end: the real `kcm run` on real data, in a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kcm_app.cli import main
from tests.helpers import QUIET, set_args

FIELDS = (
    "cycle",
    "n",
    "accuracy",
    "accuracy_many",
    "accuracy_medium",
    "accuracy_few",
    "large_call_rate",
    "large_calls",
    "seconds",
)


def _run(args: list[str], in_process: bool = True) -> dict:
    mode = ["--in-process"] if in_process else []
    assert main(["run", "--no-progress", *mode, *args]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_digits_run_through_the_flows_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefect_api: None
) -> None:
    rep = _run(["--out", str(tmp_path / "out")], in_process=False)
    assert rep["dataset"] == "digits" and rep["config"]["routing"]["epsilon"] == "auto"
    assert rep["settings"]["routing"]["epsilon"] == 0.98  # as kcm.defaults decided it
    assert set(rep["groups"].values()) == {"many", "medium", "few"}
    assert len(rep["cycles"]) == 5
    for c in rep["cycles"]:
        assert all(k in c for k in FIELDS)
    assert rep["cycles"][0]["large_call_rate"] == 1.0  # nothing trusted before training
    assert rep["cycles"][-1]["large_call_rate"] < rep["cycles"][1]["large_call_rate"] + 0.3
    for view in ("final", "final_balanced"):
        assert all(k in rep[view] for k in FIELDS[1:-1])
    for base in ("large_only", "small_only", "cascade"):
        assert 0.0 <= rep[base]["traffic"] <= 1.0 and 0.0 <= rep[base]["balanced"] <= 1.0
    assert set(rep["forgetting"]) >= {"bwt", "forgetting", "forgetting_few"}
    assert len(rep["accuracy_matrix"]) == 5 and len(rep["accuracy_matrix"][-1]) == 5
    # the system is far better than chance and close to the large model on traffic
    assert rep["final"]["accuracy"] > 0.8
    assert rep["final"]["accuracy"] >= rep["large_only"]["traffic"] - 0.05
    assert "kcm run: digits" in capsys.readouterr().out
    # the same run without Prefect: one driver (tests/e2e/test_one_driver.py)
    # re-running into the same folder with another config is refused
    assert main(["run", "--in-process", "--out", str(tmp_path / "out"), "--set", "seed=3"]) == 2


@pytest.mark.slow
def test_unlabeled_stream_learns_from_the_large_model(tmp_path: Path) -> None:
    rep = _run(
        ["--out", str(tmp_path / "o"), "--set", "data.stream.label_fraction=0.0", "--judge", "mlp"]
    )
    last = rep["cycles"][-1]
    assert last["small_accuracy"] > 0.5  # learned from large-model outputs only
    # no labels: the labels-only baseline never learns anything
    assert rep["small_only"]["traffic"] < rep["final"]["accuracy"] - 0.2


@pytest.mark.slow
def test_csv_text_dataset_with_the_real_transformer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    topics = {
        "sports": ["goal", "match", "team", "score"],
        "food": ["pizza", "bread", "soup", "cake"],
        "tech": ["laptop", "code", "server", "phone"],
    }
    rows = [
        {"sentence": f"the {rng.choice(words)} and the {rng.choice(words)} today", "topic": t}
        for t, words in topics.items()
        for _ in range(60)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    rep = _run(
        [
            "--dataset",
            "csv",
            "--train",
            str(tmp_path / "d.csv"),
            "--text-col",
            "sentence",
            "--label-col",
            "topic",
            "--out",
            str(tmp_path / "o"),
            "--set",
            "data.imbalance_factor=5",
            "--set",
            "data.stream.n_batches=3",
        ]
    )
    assert rep["large_backend"] == "embedding-head"
    assert rep["large_only"]["balanced"] > 0.9


@pytest.mark.slow
def test_unreachable_openai_endpoint_is_recorded_not_fatal(tmp_path: Path) -> None:
    """The small model answers, every failure is recorded, and the run exits 3: the
    circuit breaker opened, so a scheduler sees that the endpoint is down."""
    out = tmp_path / "o"
    code = main(
        [
            "run",
            "--no-progress",
            "--in-process",
            "--out",
            str(out),
            "--set",
            "large.backend=openai",
            "--set",
            "large.openai.base_url=http://127.0.0.1:9/v1",
            "--set",
            "large.openai.max_retries=1",
            "--set",
            "large.openai.backoff=0.01",
            "--set",
            "data.stream.n_batches=2",
        ]
    )
    assert code == 3
    rep = json.loads((out / "report.json").read_text())
    assert rep["large_ledger"]["circuit_open"] >= 1 and rep["large_ledger"]["skipped"] > 0
    assert rep["large_ledger"]["requests"] == 0  # nothing ever reached a closed port
    assert rep["large_ledger"]["failures"] > 0 and rep["large_ledger"]["retries"] > 0
    assert rep["cycles"][0]["large_failures"] == rep["cycles"][0]["n"]
    assert any("reachable" in e["error"] for e in rep["large_failures"])
    assert rep["large_ledger"]["failures"] >= rep["cycles"][0]["n"]
    import pandas as pd  # the answers say who answered and why the large model did not

    answers = pd.read_csv(out / rep["cycles"][0]["answers"], keep_default_na=False)  # relative
    assert (answers["answered_by"] == "small-fallback").all()
    assert (answers["large_error"] != "").all()  # each row says why: unreachable, or the circuit
    assert answers["large_error"].str.contains("reachable").any()


@pytest.mark.slow
def test_banking77_small_run(tmp_path: Path, banking77_dir: Path) -> None:
    rep = _run(
        [
            "--dataset",
            "banking77",
            "--data-dir",
            str(banking77_dir),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "data.pretrain_fraction=0.1",
            "--set",
            "data.stream.n_batches=2",
            "--set",
            "eval.traffic_size=300",
            "--set",
            "large.embedding_head.epochs=100",
            *set_args(*QUIET),  # the text path; MLflow, DVC and plots are the digits runs'
        ]
    )
    assert rep["data"]["n_classes"] == 77
    assert rep["large_only"]["balanced"] > 0.7
    assert rep["final"]["large_call_rate"] < 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "banking77", "--data-dir", "nowhere"], "BANKING77 not found"),
        (["--set", "judge.hiden=3"], "unknown key 'judge.hiden'"),
        (["--dataset", "csv", "--train", "missing.csv", "--text-col", "t"], "does not exist"),
    ],
)
def test_bad_input_gives_one_clear_error_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--no-progress", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kcm: error:") and message in err[0]


def test_csv_without_named_columns_via_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pd.DataFrame({"a": ["x", "y"], "b": ["p", "q"]}).to_csv(tmp_path / "t.csv", index=False)
    code = main(
        [
            "run",
            "--dataset",
            "csv",
            "--train",
            str(tmp_path / "t.csv"),
            "--text-col",
            "text",
            "--label-col",
            "b",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "no column(s) ['text']" in capsys.readouterr().err


def test_config_command_prints_resolved_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "routing.epsilon=0.9"]) == 0
    assert "epsilon: 0.9" in capsys.readouterr().out
