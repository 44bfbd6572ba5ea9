"""Large-model backends behind one protocol, registered by name and imported lazily."""

from __future__ import annotations

from pathlib import Path

from kcm import registry
from kcm.config import KCMConfig
from kcm.cost import resolve_price
from kcm.data.batch import Task
from kcm.models.cache import ResponseCache
from kcm.models.large.base import Failure, LargeModel, LargeOutput, fuse, out_of_scope_row

BACKENDS = tuple(registry.LARGE_BACKENDS)


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
    model: LargeModel = registry.load("large.backend", backend).from_config(cfg, task, cache)
    model.hint_weight = cfg.large.hint_weight if cfg.large.hint else 0.0
    model.max_consecutive_failures = cfg.large.max_consecutive_failures
    model.out_of_scope_below = cfg.large.out_of_scope.below
    model.unknown_answers = cfg.large.out_of_scope.unknown_answers
    p = cfg.large.price
    model.price = resolve_price(
        p.input_per_1m, p.output_per_1m, p.per_call, p.currency, model.priced_model()
    )
    return model


__all__ = [
    "BACKENDS",
    "Failure",
    "LargeModel",
    "LargeOutput",
    "fuse",
    "make_large_model",
    "out_of_scope_row",
    "resolve_backend",
]
