"""Large models for flow tests: deterministic, and recording what they are asked."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kcm.workspace import Workspace


def _record(inputs: list[Any]) -> None:
    """One line per call, appended with one write (whole lines from concurrent processes)."""
    path = os.environ.get("KCM_TEST_CALLS")
    if not path:
        return
    hashes = [hashlib.sha256(np.asarray(v, np.float32).tobytes()).hexdigest() for v in inputs]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(hashes) + "\n").encode())
    finally:
        os.close(fd)


def digits_large(inputs: list[Any], hints: np.ndarray | None) -> np.ndarray:
    """A 'large model' for digits: a softmax over distances to the digit class means."""
    from sklearn.datasets import load_digits

    d = load_digits()
    means = np.stack([d.data[d.target == c].mean(0) for c in range(10)]) / 16.0
    x = np.stack([np.asarray(v, dtype=float) for v in inputs])
    dist = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    p = np.exp(-(dist - dist.min(1, keepdims=True)))
    _record(inputs)
    return p / p.sum(1, keepdims=True)


def inputs_asked() -> list[list[str]]:
    """Per call, the hashes of the inputs the large model was asked about."""
    path = os.environ.get("KCM_TEST_CALLS")
    if not path or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def calls_made() -> list[int]:
    return [len(c) for c in inputs_asked()]


#: settings that keep an end-to-end run to its own folder and quick (no registry, DVC, plots)
QUIET = ("registry.enabled=false", "dvc.enabled=false", "eval.plots=false")
#: a small digits run with the registry on, its large model a local callable (no DVC, no plots)
REGISTERED_DIGITS = (
    "large.backend=callable",
    "large.callable.target=tests.helpers:digits_large",
    "judge.epochs=10",
    "data.stream.n_batches=2",
    "dvc.enabled=false",
    "eval.plots=false",
)
#: a small, quiet digits run whose large model is a local callable (seconds a cycle)
TINY_DIGITS = (
    "large.backend=callable",
    "large.callable.target=tests.helpers:digits_large",
    "judge.epochs=10",
    *QUIET,
    "eval.traffic_size=60",
)


def openai_digits(base_url: str, *extra: str) -> list[str]:
    """``--set`` arguments of a 2-batch digits run against an OpenAI-compatible endpoint."""
    return set_args(
        "large.backend=openai",
        f"large.openai.base_url={base_url}",
        "large.openai.backoff=0.01",
        "data.stream.n_batches=2",
        *extra,
    )


def set_args(*settings: str) -> list[str]:
    """``--set KEY=VALUE`` for each setting, as the CLI takes them."""
    return [a for s in settings for a in ("--set", s)]


def wait_for_ping(proc: Any, port: int, log: Path, timeout: float = 180) -> None:
    """Wait until ``mlflow models serve`` (``proc``) answers /ping on ``port``; fail with the
    tail of its log if it exits or does not come up."""
    import contextlib
    import time

    import httpx
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                return
        time.sleep(1)
    pytest.fail(f"mlflow models serve did not come up: {log.read_text()[-3000:]}")


def champion_answers_in_a_fresh_process(workspace: Path, rows: Any, tmp_path: Path) -> Any:
    """The registered champion of ``workspace`` loaded by MLflow in a new Python process
    (kcm from this checkout on its path) and asked about ``rows``; its answers as a frame."""
    import subprocess
    import sys

    import pandas as pd

    rows.to_parquet(tmp_path / "rows.parquet")
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{Workspace(workspace).load_ledger().model_name}"
        "@champion')\n"
        "m.predict(pd.read_parquet(sys.argv[1])).to_json(sys.argv[2], orient='records')\n"
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workspace}/mlflow/mlflow.db",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "rows.parquet"), str(tmp_path / "o.json")],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    return pd.read_json(tmp_path / "o.json", orient="records", dtype={"answer": str})
