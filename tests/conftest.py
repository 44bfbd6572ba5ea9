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

REPO = Path(__file__).resolve().parents[1]
BANKING77 = (REPO / ".." / "shared" / "data" / "banking77").resolve()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
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
