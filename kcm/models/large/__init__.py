"""Large-model backends behind one protocol, registered by name and imported lazily."""

from __future__ import annotations

from pathlib import Path

from kcm.config import KCMConfig
from kcm.data.batch import Task
from kcm.errors import ConfigError
from kcm.models.cache import ResponseCache
from kcm.models.large.base import Failure, LargeModel, LargeOutput, fuse

BACKENDS = ("embedding-head", "mlp-teacher", "openai", "callable")


def resolve_backend(cfg: KCMConfig, task: Task) -> str:
    backend = cfg.large.backend
    if backend == "auto":
        return "embedding-head" if task.kind == "text" else "mlp-teacher"
    return backend


def make_large_model(cfg: KCMConfig, task: Task, cache_dir: str | Path | None = None) -> LargeModel:
    """Build the backend named in ``cfg.large.backend`` (not yet fitted)."""
    backend = resolve_backend(cfg, task)
    where = cache_dir or cfg.large.cache_dir
    cache = ResponseCache(Path(where) / "large_cache.sqlite" if where else None)
    model: LargeModel
    if backend == "embedding-head":
        from kcm.models.large.heads import EmbeddingHeadModel

        model = EmbeddingHeadModel(task, cfg.large.embedding_head, cache, seed=cfg.seed)
    elif backend == "mlp-teacher":
        from kcm.models.large.heads import MLPTeacherModel

        model = MLPTeacherModel(task, cfg.large.mlp_teacher, cache, seed=cfg.seed)
    elif backend == "openai":
        from kcm.models.large.openai import OpenAIChatModel

        model = OpenAIChatModel(task, cfg.large.openai, cache, use_hint=cfg.large.hint)
    elif backend == "callable":
        from kcm.models.large.callable import CallableModel, import_callable

        target = cfg.large.callable.target or ""
        model = CallableModel(task, import_callable(target), cache, ident=target)
    else:
        raise ConfigError(f"large.backend={backend!r}; choose one of {('auto', *BACKENDS)}")
    model.hint_weight = cfg.large.hint_weight if cfg.large.hint else 0.0
    return model


__all__ = [
    "BACKENDS",
    "Failure",
    "LargeModel",
    "LargeOutput",
    "fuse",
    "make_large_model",
    "resolve_backend",
]
