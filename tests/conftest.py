"""Shared fixtures. Every test runs in its own temporary working directory, offline."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kcm.env import apply_offline_env

apply_offline_env()

# Prefect keeps its database and results under PREFECT_HOME: a temporary one for the session.
_PREFECT_HOME = tempfile.mkdtemp(prefix="kcm-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests use their own SQLite stores
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# Under pytest-xdist (`make test`: one worker per core) each worker gets its share of the
# cores for torch, and so do the processes it starts: workers with a thread per core each spin
# against one another and the heavy tests run several times slower.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    _THREADS = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = _THREADS
    import torch

    torch.set_num_threads(int(_THREADS))

REPO = Path(__file__).resolve().parents[1]
BANKING77 = (REPO / ".." / "shared" / "data" / "banking77").resolve()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    # mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ: without this, a
    # test's subprocesses would inherit the store of an earlier test on the same worker
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def banking77_dir() -> Path:
    if not (BANKING77 / "train.csv").is_file():
        pytest.skip(f"BANKING77 not present at {BANKING77}")
    return BANKING77


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API for the tests that run real flows (started once, ~12 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
