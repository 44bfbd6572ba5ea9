"""The sections of the platform kcm reports to: MLflow tracking and registry, DVC."""

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
