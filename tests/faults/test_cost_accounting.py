"""The fault suite, part 3: what a run reports it paid equals what the endpoint counted.

A real kcm run (digits, through the Prefect flows with the large-model chunks in parallel
threads, the case where per-chunk costs used to overlap, or on Dask worker processes) against
a counting OpenAI-compatible server on loopback, which fails its first requests with 503 so
that retries are part of the count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kcm.workspace import Workspace
from kcm_app.cli import main
from tests.helpers import QUIET, openai_digits, set_args
from tests.llm_server import LLMServer

pytestmark = pytest.mark.slow

DIGITS = [str(i) for i in range(10)]


@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_reported_requests_equal_what_the_endpoint_received(tmp_path: Path, runner: str) -> None:
    if runner == "dask":
        pytest.importorskip("prefect_dask")
    out = tmp_path / "o"
    with LLMServer(DIGITS, fail_first=6) as srv:
        args = [
            "run",
            "--no-progress",
            "--out",
            str(out),
            *openai_digits(
                srv.base_url,
                "flow.large_chunk_size=16",
                f"flow.task_runner={runner}",
                "flow.max_workers=2",
                *QUIET,
            ),
        ]
        assert main(args) == 0
        received = len(srv.requests)
        billed = dict(srv.billed)
    rep = json.loads((out / "report.json").read_text())
    by = rep["large_ledger_by_purpose"]
    assert by["serve"]["requests"] + by["evaluate"]["requests"] == received
    # tokens and dollars are the endpoint's bill (gpt-4o-mini's published prices by default)
    for kind in ("prompt_tokens", "completion_tokens"):
        assert by["serve"][kind] + by["evaluate"][kind] == billed[kind]
    bill = (0.15 * billed["prompt_tokens"] + 0.6 * billed["completion_tokens"]) / 1e6
    assert by["serve"]["cost"] + by["evaluate"]["cost"] == pytest.approx(bill)
    money = rep["money"]
    assert money["spent"]["serve"] == pytest.approx(by["serve"]["cost"])
    assert money["spent"]["evaluate"] == pytest.approx(by["evaluate"]["cost"])
    assert money["price"]["source"] == "published:gpt-4o-mini" and not money["estimated"]
    assert by["serve"]["retries"] + by["evaluate"]["retries"] >= 1  # the 503s were retried
    assert by["serve"]["requests"] > 0 and by["evaluate"]["requests"] > 0
    assert rep["large_ledger"] == by["serve"]
    ws = Workspace(out)  # (dask: the flow.task_runner switch) several chunks, on the workers
    name = ws.load_ledger().order[0]
    assert len(list(ws.run_dir(name).glob("large-*.npz"))) > 1
    assert all(b.status == "processed" for b in ws.load_ledger().batches.values())


FRUIT = ["apple", "banana", "cherry", "grape", "lemon", "mango"]


def test_with_the_registry_on_no_request_escapes_the_ledgers(tmp_path: Path) -> None:
    """Publishing logs each version to MLflow, which used to answer an input example through
    the system (and once more to validate it): requests the endpoint received and no ledger
    counted (7 of 1,037 on a small text task). Every body the endpoint saw is counted once."""
    rng = np.random.default_rng(0)
    filler = ["please", "now", "i", "want", "some", "fresh", "the", "a", "today", "good"]
    rows = []
    for i in range(420):
        label = FRUIT[i % len(FRUIT)]
        words = [*rng.choice(filler, 4), label if rng.random() < 0.3 else "", str(i)]
        rows.append({"text": " ".join(rng.permutation(words)), "label": label})
    data = tmp_path / "fruit.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    out = tmp_path / "o"
    with LLMServer(FRUIT) as srv:
        args = [
            "run",
            "--no-progress",
            "--in-process",  # publishing is the driver's, the same on both paths
            "--out",
            str(out),
            "--dataset",
            "csv",
            "--train",
            str(data),
            "--text-col",
            "text",
            *set_args(
                "large.backend=openai",
                f"large.openai.base_url={srv.base_url}",
                "data.stream.n_batches=2",
                "features.kind=tfidf",
                "dvc.enabled=false",
                "eval.plots=false",
                f"registry.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            ),
        ]
        assert main(args) == 0
        received = len(srv.requests)
        bodies = {json.dumps(r["body"], sort_keys=True) for r in srv.requests}
    by = json.loads((out / "report.json").read_text())["large_ledger_by_purpose"]
    assert by["serve"]["requests"] + by["evaluate"]["requests"] == received == len(bodies)
