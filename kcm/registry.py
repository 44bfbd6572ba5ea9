"""One name -> implementation table per extension point.

Config validation, the command line's choices and the factories all read these tables, so
adding a judge, a large-model backend or a dataset means writing its module and adding one row
here. Rows name ``"module:attribute"`` and are imported only when used (heavy backends load
lazily). Bench methods are rows of ``kcm.bench.methods.METHODS_TABLE`` (a table of their own).
"""

from __future__ import annotations

import importlib
from typing import Any

from kcm.errors import ConfigError

#: judge.kind -> the judge class (``from_config(cfg: JudgeConfig, seed) -> Judge``)
JUDGES: dict[str, str] = {
    "kan": "kcm.judge.kan:KANJudge",  # KCM
    "mlp": "kcm.judge.mlp:MLPJudge",  # MCM
    "logreg": "kcm.judge.logistic:LogisticJudge",  # a router on the small model's confidence
}

#: large.backend -> the backend class (``from_config(cfg: KCMConfig, task, cache)``)
LARGE_BACKENDS: dict[str, str] = {
    "embedding-head": "kcm.models.large.heads:EmbeddingHeadModel",
    "mlp-teacher": "kcm.models.large.heads:MLPTeacherModel",
    "openai": "kcm.models.large.openai:OpenAIChatModel",
    "callable": "kcm.models.large.callable:CallableModel",
    "replay": "kcm.models.large.replay:ReplayModel",  # recorded answers (e.g. GPT-4's)
}

#: data.dataset -> the loader ``(cfg: DataConfig, seed) -> (Task, train Batch, test Batch)``
DATASETS: dict[str, str] = {
    "digits": "kcm.data.sources:load_digits_task",
    "banking77": "kcm.data.sources:load_banking77_task",
    "csv": "kcm.data.sources:load_csv_task",
}

#: kcm score --engine -> the engine class (``(address, workers)``; ``run(job) -> parts``)
ENGINES: dict[str, str] = {
    "local": "kcm.scoring:LocalEngine",  # this process
    "dask": "kcm.adapters.dask_engine:DaskEngine",  # a Dask cluster (local by default)
    "spark": "kcm.adapters.spark_engine:SparkEngine",  # Spark, the pyfunc as MLflow's spark_udf
}

TABLES: dict[str, dict[str, str]] = {
    "judge.kind": JUDGES,
    "large.backend": LARGE_BACKENDS,
    "data.dataset": DATASETS,
    "score.engine": ENGINES,
}


def check(key: str, name: str, extra: tuple[str, ...] = ()) -> str:
    """``name`` if the table behind ``key`` has it, else a ConfigError naming the choices."""
    table = TABLES[key]
    if name in table or name in extra:
        return name
    choices = ", ".join([*extra, *sorted(table)])
    raise ConfigError(f"{key}={name!r} is not known: choose one of {choices}")


def load(key: str, name: str) -> Any:
    """The implementation registered under ``name`` in the table behind ``key``."""
    target = TABLES[key][check(key, name)]
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
