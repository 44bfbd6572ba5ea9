"""A recorded large model replayed: a table of input -> the answer the model gave.

For a real LLM offline (e.g. GPT-4's recorded answers to every BANKING77 test query, as
published with OCaTS) and for reproducible benchmarks. An input with no recorded answer, or a
recorded answer outside the label set (or empty: the model replied with no known label), is a
recorded failure, never a guess (unless ``large.out_of_scope.unknown_answers`` is
``out_of_scope``: then a recorded answer naming no class of the task, e.g. an intent held back
from it, is an out-of-scope answer; the answer ``out_of_scope`` always is). The answers were recorded without kcm's hint, so the hint is
not part of the request; for this backend it only breaks ties in the fusion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kcm.config import KCMConfig, ReplayConfig
from kcm.cost import chat_tokens, count_tokens
from kcm.data.batch import Task
from kcm.errors import ConfigError
from kcm.models.cache import ResponseCache
from kcm.models.large.base import Failure, LargeModel, Replies
from kcm.models.large.prompt import chat_messages


class ReplayModel(LargeModel):
    name: ClassVar[str] = "replay"

    def __init__(
        self, task: Task, cfg: ReplayConfig | None = None, cache: ResponseCache | None = None
    ) -> None:
        super().__init__(task, cache)
        self.cfg = cfg or ReplayConfig()
        self.chunk_size = 4096
        self._table: dict[str, str] | None = None
        self._digest: str | None = None

    @classmethod
    def from_config(cls, cfg: KCMConfig, task: Task, cache: ResponseCache) -> LargeModel:
        return cls(task, cfg.large.replay, cache)

    def _path(self) -> Path:
        if not self.cfg.path:
            raise ConfigError(
                "large.backend=replay needs large.replay.path: a CSV or Parquet file of inputs "
                "and recorded answers (e.g. ../shared/data/banking77-llm/test_answers.csv)"
            )
        p = Path(self.cfg.path).expanduser()
        if not p.is_file():
            raise ConfigError(f"large.replay.path={self.cfg.path!r} does not exist: give the file")
        return p

    def table(self) -> dict[str, str]:
        """input text -> recorded answer ('' where the model answered nothing usable)."""
        if self._table is None:
            from kcm.data.sources import read_table

            path = self._path()
            df = read_table(path, str_cols=(self.cfg.input_col, self.cfg.answer_col))
            missing = [c for c in (self.cfg.input_col, self.cfg.answer_col) if c not in df]
            if missing:
                raise ConfigError(
                    f"{path} has no column(s) {missing} (columns: {list(df.columns)}): set "
                    "large.replay.input_col / answer_col"
                )
            answers = df[self.cfg.answer_col].fillna("").astype(str)
            self._table = dict(
                zip(df[self.cfg.input_col].astype(str).str.strip(), answers, strict=True)
            )
            self._digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return self._table

    def fingerprint(self) -> str:
        self.table()
        return (
            f"replay:{self._digest}:{self.cfg.input_col}:{self.cfg.answer_col}{self.oos_suffix()}"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "path": str(self.cfg.path),
            "answer_col": self.cfg.answer_col,
            "model": self.cfg.model,
            "recorded": len(self.table()) if self.cfg.path else None,
        }

    def priced_model(self) -> str | None:
        return self.cfg.model

    def tokens(self, item: Any) -> tuple[int, int]:
        """Prompt and completion tokens the recorded model would have been charged."""
        answer = self.table().get(str(item).strip()) or ""
        return chat_tokens(chat_messages(self.task, item, None)), count_tokens(answer)

    def estimate(self, item: Any, hint: np.ndarray | None) -> float:
        return self.price.of(*self.tokens(item))

    def _answer(
        self, inputs: Sequence[Any], hints: np.ndarray | None
    ) -> list[np.ndarray | Failure]:
        table = self.table()
        out: list[np.ndarray | Failure] = []
        costs: list[float] = []
        for item in inputs:
            recorded = str(item).strip() in table
            prompt, completion = self.tokens(item) if recorded else (0, 0)
            self.ledger.add(
                prompt_tokens=prompt, completion_tokens=completion, estimated_tokens=int(recorded)
            )
            costs.append(self.price.of(prompt, completion) if recorded else 0.0)
            answer = table.get(str(item).strip())
            if answer is None:
                out.append(Failure("no recorded answer for this input"))
            elif answer == "":
                out.append(Failure("recorded answer outside the label set: ''"))
            else:
                row = self.row_of(answer)
                out.append(Failure(f"recorded {row}") if isinstance(row, Failure) else row)
        return Replies(out, costs)
