"""The one home of the offline and no-telemetry environment defaults (the CLI, the flows and
the tests apply them; a value the user set is never overridden)."""

from __future__ import annotations

import os

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",  # Prefect accepts 1/true/yes; MLflow only "true"
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def apply_offline_env() -> None:
    """Set every default the environment does not set already."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
