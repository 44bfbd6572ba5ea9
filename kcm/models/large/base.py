"""The large-model protocol: ``predict_proba(inputs, hints) -> LargeOutput``.

Backends implement ``_answer`` for the inputs that are not cached; this base class does the
caching (by input hash, and by hint too for backends whose request contains the hint), the
ledger (calls, latency, tokens, money, failures), the spend caps (a ``SpendGuard`` admits each
chunk's calls at their estimated price before any is sent) and the hint for classifier
backends (a fusion of the large model's distribution with the small model's,
``p ∝ p_large · p_small^w``).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kcm.budget import SpendGuard
from kcm.config import KCMConfig
from kcm.cost import Price
from kcm.data.batch import OUT_OF_SCOPE_LABEL, Batch, Task
from kcm.errors import LargeModelError
from kcm.failpoints import reach
from kcm.models.cache import CallLedger, ResponseCache, input_key
from kcm.models.large.prompt import hint_text

log = logging.getLogger(__name__)
_BREAKER_LOCK = threading.Lock()


@dataclass
class LargeOutput:
    """``raw``: the backend's distribution; ``answer``: after the hint; NaN rows where the
    call failed (``ok`` False): the caller falls back and the failure is in the ledger."""

    raw: np.ndarray
    answer: np.ndarray
    ok: np.ndarray
    keys: np.ndarray | None = None  # the answer-cache key of each input
    cost: np.ndarray | None = None  # what answering each input cost now (0: cached, small)
    refused: np.ndarray | None = None  # not sent: the spend cap would have been exceeded
    errors: np.ndarray | None = None  # why each failed call failed ("" where ok)
    out_of_scope: np.ndarray | None = None  # answered, but no class of the task fits

    def oos(self) -> np.ndarray:
        """``out_of_scope`` as a mask (all False when the backend never says it)."""
        return np.zeros(len(self.ok), bool) if self.out_of_scope is None else self.out_of_scope

    def refused_mask(self) -> np.ndarray:
        return np.zeros(len(self.ok), bool) if self.refused is None else self.refused

    def __len__(self) -> int:
        return len(self.ok)


class Failure(str):
    """A per-item failure message returned by ``_answer`` instead of a distribution."""


class Replies(list):  # type: ignore[type-arg]
    """What ``_answer`` returns when it knows what each item cost (``costs``, one per item,
    failed items included: a reply outside the label set was paid for)."""

    def __init__(self, rows: Sequence[np.ndarray | Failure], costs: Sequence[float]) -> None:
        super().__init__(rows)
        self.costs = [float(c) for c in costs]


BUDGET_REFUSED = "spend cap reached ({purpose}): not sent; the small model answers"


def out_of_scope_row(n_classes: int) -> np.ndarray:
    """What a backend returns for "no class of the task fits": no mass on any class."""
    return np.zeros(n_classes)


def out_of_scope_mask(raw: np.ndarray, ok: np.ndarray, below: float | None) -> np.ndarray:
    """Rows answered out of scope: (almost) no mass on the task's classes, or, with the rule
    ``below``, a top probability under it."""
    mass = np.where(ok, np.nan_to_num(raw).sum(axis=1), 1.0)
    oos = ok & (mass < 0.5)
    if below is not None:
        oos |= ok & (np.nan_to_num(raw).max(axis=1) < below)
    return oos


class EndpointError(LargeModelError):
    """The endpoint refuses every request (e.g. HTTP 401/403: a wrong API key): the run
    fails, saying so, instead of falling back silently. Not the batch's fault."""


CIRCUIT_OPEN = (
    "circuit open: the endpoint failed {n} times in a row; not called for the rest of this call"
)


def fuse(raw: np.ndarray, hints: np.ndarray, weight: float) -> np.ndarray:
    """Product of experts: ``p ∝ p_large · p_small^weight`` row by row."""
    logp = np.log(np.clip(raw, 1e-12, 1.0)) + weight * np.log(np.clip(hints, 1e-12, 1.0))
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


class LargeModel(ABC):
    """Base class of every large-model backend."""

    name: ClassVar[str] = "base"
    #: True when the hint is part of the request (a prompt), so it is part of the cache key.
    hint_in_request: ClassVar[bool] = False
    chunk_size: int = 64
    #: True when ``_answer`` reports each item's outcome to ``note`` itself (as it goes)
    notes_itself: ClassVar[bool] = False
    #: open the circuit after this many consecutive failures (0: never)
    max_consecutive_failures: int = 0
    #: the configured rule: a top probability under this is an out-of-scope answer (None: off)
    out_of_scope_below: float | None = None
    #: a reply naming no class of the task: "failure" or "out_of_scope"
    unknown_answers: str = "failure"
    #: set around each ``_answer`` call: a backend that answers item by item (HTTP) hands
    #: each answer to it as it arrives, so it is stored at once
    answered_hook: Callable[[int, Any], None] | None = None
    #: where an HTTP backend keeps its rate limiter's clocks (a workspace's
    #: state/limits.sqlite, shared by every process of a run); None: this process only
    limits_path: str | None = None

    def __init__(self, task: Task, cache: ResponseCache | None = None) -> None:
        self.task = task
        self.cache = cache if cache is not None else ResponseCache()
        self.ledger = CallLedger()
        self.hint_weight = 0.5
        self.hint_top_k = 3
        self.price = Price()
        self.guard: SpendGuard | None = None
        self.tripped_ = False
        self._streak = 0

    def session(self) -> LargeModel:
        """This model with a ledger and a circuit breaker of its own (the fitted state, the
        answer store and the connections are shared): one per concurrent caller, so that
        what each caller paid is exactly what it sent, whatever runs beside it."""
        view = copy.copy(self)
        view.ledger = CallLedger()
        view.tripped_, view._streak = False, 0
        return view

    def note(self, ok: bool) -> None:
        """Count an item's outcome for the circuit breaker (thread-safe)."""
        with _BREAKER_LOCK:
            self._streak = 0 if ok else self._streak + 1
            n = self.max_consecutive_failures
            if n and not self.tripped_ and self._streak >= n:
                self.tripped_ = True
                self.ledger.add(circuit_open=1)
                log.error(
                    "the %s endpoint failed %d times in a row: circuit open, not called for "
                    "the rest of this call (the small model answers)",
                    self.name,
                    n,
                )

    @classmethod
    def from_config(cls, cfg: KCMConfig, task: Task, cache: ResponseCache) -> LargeModel:
        """Build the backend from the configuration (its registry row points here)."""
        raise NotImplementedError(f"{cls.__name__} does not define from_config")

    def row_of(self, reply: str) -> np.ndarray | Failure:
        """The distribution of a reply that names a label: one-hot on a class of the task,
        the out-of-scope row for ``out_of_scope`` (and, with ``unknown_answers`` =
        ``out_of_scope``, for any other name), else a failure."""
        c = self.task.n_classes
        i = self.task.label_index().get(reply)
        if i is not None:
            row = np.zeros(c)
            row[i] = 1.0
            return row
        if reply == OUT_OF_SCOPE_LABEL or self.unknown_answers == "out_of_scope":
            return out_of_scope_row(c)
        return Failure(f"answer outside the label set: {reply!r}")

    def oos_suffix(self) -> str:
        """Part of the cache key of backends whose replies name labels: an unknown name is
        cached as out of scope only under ``unknown_answers=out_of_scope``."""
        return ":oos" if self.unknown_answers == "out_of_scope" else ""

    # -- backend hooks -------------------------------------------------------------
    def fit(self, pretrain: Batch) -> LargeModel:
        """Fit whatever must be fitted once on the pretraining split (default: nothing)."""
        return self

    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the model and its settings (never a secret) for the cache key."""

    @abstractmethod
    def _answer(
        self, inputs: Sequence[Any], hints: np.ndarray | None
    ) -> list[np.ndarray | Failure]:
        """Answer uncached inputs: one distribution (or a ``Failure``) per input."""

    def describe(self) -> dict[str, Any]:
        """The backend and its settings, for reports and the model registry (no secrets)."""
        return {"backend": self.name}

    def state(self) -> dict[str, np.ndarray]:
        """Fitted arrays to save (default: none; the backend is its settings)."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> LargeModel:
        return self

    def priced_model(self) -> str | None:
        """The model name whose published price applies (None: a local model)."""
        return None

    def estimate(self, item: Any, hint: np.ndarray | None) -> float:
        """An upper bound of what sending ``item`` costs (what a spend cap reserves)."""
        return self.price.of(0, 0, 1)

    def expected_cost(self, item: Any) -> float:
        """What asking about ``item`` without a hint is expected to cost (the
        everything-to-the-large-model figure savings are measured against)."""
        return self.estimate(item, None)

    # -- the protocol --------------------------------------------------------------
    def _key(self, item: Any, hint: np.ndarray | None) -> str:
        extra = ""
        if self.hint_in_request and hint is not None:
            extra = hint_text(hint, self.task.label_names, self.hint_top_k)
        return input_key(self.fingerprint(), item, extra)

    def predict_proba(
        self,
        inputs: Sequence[Any],
        hints: np.ndarray | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> LargeOutput:
        """Answer ``inputs``; ``hints`` (the small model's distributions) modify the request
        (prompt backends) or are fused with the answer (classifier backends)."""
        n = len(inputs)
        c = self.task.n_classes
        raw = np.full((n, c), np.nan)
        keys = [self._key(inputs[i], None if hints is None else hints[i]) for i in range(n)]
        cached = self.cache.get_many(keys)
        self.ledger.cache_hits += sum(1 for k in keys if k in cached)
        errors = np.full(n, "", dtype=object)
        cost = np.zeros(n)
        refused = np.zeros(n, bool)
        todo: list[int] = []
        first: dict[str, int] = {}  # identical requests within one call are sent once
        repeats: list[tuple[int, int]] = []
        for i, k in enumerate(keys):
            if k in cached:
                raw[i] = cached[k]
            elif k in first:
                repeats.append((i, first[k]))
            else:
                first[k] = i
                todo.append(i)
        if progress is not None and len(todo) < n:
            progress(n - len(todo))
        self.tripped_, self._streak = False, 0
        for start in range(0, len(todo), self.chunk_size):
            part = todo[start : start + self.chunk_size]
            if self.tripped_:  # the breaker opened: nothing more is sent in this call
                msg = CIRCUIT_OPEN.format(n=self.max_consecutive_failures)
                for i in part:
                    self.ledger.record_failure(keys[i], msg)
                    errors[i] = msg
                self.ledger.add(skipped=len(part))
                if progress is not None:
                    progress(len(part))
                continue
            ticket = None
            if self.guard is not None and self.guard.capped:
                ticket = self.guard.admit(
                    [self.estimate(inputs[i], None if hints is None else hints[i]) for i in part]
                )
                for i in part[ticket.n :]:
                    errors[i] = BUDGET_REFUSED.format(purpose=self.guard.purpose)
                    refused[i] = True
                self.ledger.add(refused=len(part) - ticket.n)
                if progress is not None and ticket.n < len(part):
                    progress(len(part) - ticket.n)
                part = part[: ticket.n]
                if not part:
                    continue
            sub_inputs = [inputs[i] for i in part]
            sub_hints = hints[part] if (hints is not None and self.hint_in_request) else None
            stored: set[str] = set()

            def store(
                j: int, row: np.ndarray | Failure, part: list[int] = part, stored: set[str] = stored
            ) -> None:
                """An answer kept the moment it arrives (a kill loses only those in flight)."""
                if not isinstance(row, Failure):
                    self.cache.put_many({keys[part[j]]: row})
                    stored.add(keys[part[j]])

            self.answered_hook = store
            t0 = time.perf_counter()
            try:
                answers = self._answer(sub_inputs, sub_hints)
            finally:
                self.answered_hook = None
            reach("large:answered")  # paid, not yet stored or settled: the fault suite kills here
            self.ledger.latency_s += time.perf_counter() - t0
            self.ledger.calls += len(part)
            costs = (
                answers.costs
                if isinstance(answers, Replies)
                else [self.price.of(0, 0, 1)] * len(part)
            )
            cost[part] = costs
            self.ledger.add(cost=float(sum(costs)))
            if ticket is not None and self.guard is not None:
                self.guard.settle(ticket, float(sum(costs)))
            fresh: dict[str, np.ndarray] = {}
            for i, ans in zip(part, answers, strict=True):
                if not self.notes_itself:
                    self.note(not isinstance(ans, Failure))
                if isinstance(ans, Failure):
                    self.ledger.record_failure(keys[i], str(ans))
                    errors[i] = str(ans)
                    continue
                raw[i] = ans
                if keys[i] not in stored:
                    fresh[keys[i]] = ans
            self.cache.put_many(fresh)
            if progress is not None:
                progress(len(part))
        for i, j in repeats:  # sent once: the repeat cost nothing more
            raw[i], errors[i], refused[i] = raw[j], errors[j], refused[j]
        ok = ~np.isnan(raw).any(axis=1)
        oos = out_of_scope_mask(raw, ok, self.out_of_scope_below)
        answer = raw.copy()
        fused = ok & ~oos
        if hints is not None and not self.hint_in_request and self.hint_weight > 0 and fused.any():
            answer[fused] = fuse(raw[fused], hints[fused], self.hint_weight)
        answer[oos] = 0.0
        return LargeOutput(
            raw=raw,
            answer=answer,
            ok=ok,
            keys=np.array(keys, dtype=str),
            errors=errors,
            out_of_scope=oos,
            cost=cost,
            refused=refused,
        )
