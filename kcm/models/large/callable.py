"""Any Python function as the large model: ``fn(inputs, hints) -> (n, C) probabilities``
(or a list of label names / indices). An all-zero row, or the label ``out_of_scope``, says no
class of the task fits (out of scope). For users' own models and for tests."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from kcm.config import KCMConfig
from kcm.data.batch import Task
from kcm.errors import ConfigError
from kcm.models.cache import ResponseCache
from kcm.models.large.base import Failure, LargeModel

LargeFn = Callable[[Sequence[Any], "np.ndarray | None"], Any]


def import_callable(target: str) -> LargeFn:
    if not target or ":" not in target:
        raise ConfigError(
            f"large.callable.target={target!r}: write it as 'package.module:function'"
        )
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"large.callable.target={target!r} cannot be imported: {err}") from None
    if not callable(fn):
        raise ConfigError(f"large.callable.target={target!r} is not callable")
    return fn


class CallableModel(LargeModel):
    name: ClassVar[str] = "callable"

    def __init__(
        self,
        task: Task,
        fn: LargeFn,
        cache: ResponseCache | None = None,
        hint_in_request: bool = False,
        ident: str | None = None,
    ) -> None:
        super().__init__(task, cache)
        self.fn = fn
        self.ident = ident or getattr(fn, "__qualname__", repr(fn))
        self._hint_in_request = hint_in_request

    @classmethod
    def from_config(cls, cfg: KCMConfig, task: Task, cache: ResponseCache) -> LargeModel:
        target = cfg.large.callable.target or ""
        return cls(task, import_callable(target), cache, ident=target)

    @property  # type: ignore[override]
    def hint_in_request(self) -> bool:  # instance-level: the function may read hints itself
        return self._hint_in_request

    def fingerprint(self) -> str:
        return f"callable:{self.ident}{self.oos_suffix()}"

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "function": self.ident}

    def _answer(
        self, inputs: Sequence[Any], hints: np.ndarray | None
    ) -> list[np.ndarray | Failure]:
        try:
            out = self.fn(list(inputs), hints)
        except Exception as err:  # a user's function failing is a recorded failure
            return [Failure(f"{type(err).__name__}: {err}")] * len(inputs)
        c = self.task.n_classes
        arr = np.asarray(out)
        if arr.ndim == 2 and arr.shape == (len(inputs), c):
            p = np.clip(arr.astype(np.float64), 0, None)
            s = p.sum(axis=1, keepdims=True)
            # an all-zero row: no class fits (out of scope)
            return [row / t if t > 0 else row for row, t in zip(p, s[:, 0], strict=True)]
        if arr.ndim == 1 and len(arr) == len(inputs):
            res: list[np.ndarray | Failure] = []
            for v in arr:
                if isinstance(v, (int, np.integer)):
                    if 0 <= int(v) < c:
                        res.append(self.row_of(self.task.label_names[int(v)]))
                    else:
                        res.append(Failure(f"answer outside the label set: {v!r}"))
                else:
                    res.append(self.row_of(str(v)))
            return res
        return [
            Failure(
                f"returned shape {arr.shape}; expected ({len(inputs)}, {c}) or ({len(inputs)},)"
            )
        ] * len(inputs)
