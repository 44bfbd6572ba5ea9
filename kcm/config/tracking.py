"""The sections of the platform kcm reports to and serves on: MLflow tracking and registry,
DVC, and the champion's scoring server (``kcm serve-model``)."""

from __future__ import annotations

from pydantic import Field

from kcm.config.sections import Section


class RegistryConfig(Section):
    """MLflow tracking and model registry (embedded default: SQLite under <workdir>/mlflow/;
    MLFLOW_TRACKING_URI points at a tracking server instead)."""

    enabled: bool = True
    tracking_uri: str | None = Field(
        None,
        description="default: MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow/mlflow.db",
    )
    experiment: str | None = Field(None, description="default: kcm-<project>")
    model_name: str | None = Field(
        None,
        description="default: <project>-<task> (fixed when its first version is registered); "
        "kcm refuses a model whose versions another workspace registered",
    )
    accuracy_tolerance: float = Field(0.01, ge=0, description="traffic accuracy may drop this much")
    few_tolerance: float = Field(
        0.0, ge=0, description="balanced Few-group accuracy may drop this much"
    )
    large_rate_tolerance: float = Field(
        0.05, ge=0, description="large-call rate may rise this much"
    )


class DVCConfig(Section):
    """Data versioning: every ingested batch is ``dvc add``-ed and pushed to the remote."""

    enabled: bool = True
    remote: str | None = Field(
        None, description="a DVC remote URL (s3://..., /path); default <workdir>/dvc-remote"
    )
    remote_name: str = "kcm"


class ServingConfig(Section):
    """``kcm serve-model``: the champion behind MLflow's scoring server (``mlflow models
    serve``), with kcm's request limits."""

    workers: int = Field(1, ge=1, description="server worker processes (one per core to use)")
    host: str = "127.0.0.1"
    port: int = Field(5001, ge=1, le=65535)
    max_rows: int = Field(
        10_000,
        ge=1,
        description="rows one request may hold; more is refused (400) naming the limit "
        "(score a big table with `kcm score`)",
    )
    max_bytes: int = Field(
        16_000_000, ge=1, description="bytes one request body may hold; more is refused (413)"
    )
    timeout: int = Field(60, ge=1, description="seconds one request may take")
