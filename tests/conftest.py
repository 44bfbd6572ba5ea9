"""Shared fixtures. Every test runs in its own temporary working directory, offline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

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
