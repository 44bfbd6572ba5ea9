"""A response cache keyed by input hash, in memory or in a SQLite file, so no answer is paid
for twice, and a ledger that counts what the large model cost."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np


def input_key(fingerprint: str, item: object, extra: str = "") -> str:
    """A stable sha256 of the backend fingerprint, the input and (optionally) the hint."""
    h = hashlib.sha256(fingerprint.encode())
    if isinstance(item, np.ndarray):
        h.update(np.ascontiguousarray(item, dtype=np.float32).tobytes())
    else:
        h.update(str(item).encode("utf-8"))
    h.update(extra.encode())
    return h.hexdigest()


class VectorStore:
    """key -> float32 vector, in memory for the process and, with ``path``, in a SQLite table
    (``TABLE``: key, ``COLUMN``: the vector's bytes). Writes are committed before
    ``put_many`` returns, so a kill keeps everything stored before it."""

    TABLE: ClassVar[str] = "answers"
    COLUMN: ClassVar[str] = "proba"

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._mem: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} (key TEXT PRIMARY KEY, {self.COLUMN} BLOB)"
            )
            self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        keys = list(keys)
        found = {k: self._mem[k] for k in keys if k in self._mem}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing and self._db is not None:
            with self._lock:
                for start in range(0, len(missing), 500):
                    part = missing[start : start + 500]
                    marks = ",".join("?" * len(part))
                    rows = self._db.execute(
                        f"SELECT key, {self.COLUMN} FROM {self.TABLE} WHERE key IN ({marks})",
                        part,
                    ).fetchall()
                    for k, blob in rows:
                        arr = np.frombuffer(blob, dtype=np.float32).copy()
                        self._mem[k] = arr
                        found[k] = arr
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        """Store vectors; with a file, committed before this returns (crash-safe)."""
        if not items:
            return
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in items.items()}
        self._mem.update(arrays)
        if self._db is not None:
            with self._lock:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO {self.TABLE} VALUES (?, ?)",
                    [(k, v.tobytes()) for k, v in arrays.items()],
                )
                self._db.commit()

    def __len__(self) -> int:
        if self._db is not None:
            with self._lock:
                return int(self._db.execute(f"SELECT COUNT(*) FROM {self.TABLE}").fetchone()[0])
        return len(self._mem)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class ResponseCache(VectorStore):
    """input key -> the large model's probability vector: no answer is paid for twice."""


_LEDGER_LOCK = threading.Lock()


@dataclass
class CallLedger:
    """What the large model cost: samples sent, requests, cache hits, failures, latency,
    tokens (``estimated_tokens``: requests whose tokens kcm counted, the endpoint reporting
    none), money (``cost``, in the price's currency), calls a spend cap refused, and the
    seconds spent waiting on rate limits."""

    calls: int = 0
    requests: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    circuit_open: int = 0  # times the circuit breaker stopped calling a failing endpoint
    skipped: int = 0  # inputs not sent because the circuit was open
    estimated_tokens: int = 0
    cost: float = 0.0
    refused: int = 0  # inputs not sent because a spend cap would have been exceeded
    wait_s: float = 0.0  # seconds waited on the rate limiter and Retry-After
    failed: list[dict[str, str]] = field(default_factory=list)

    MAX_FAILED_KEPT = 1000

    def add(self, **counts: float) -> None:
        """Add to counters; safe from the request threads of one backend."""
        with _LEDGER_LOCK:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def record_failure(self, key: str, error: str) -> None:
        with _LEDGER_LOCK:
            self.failures += 1
            if len(self.failed) < self.MAX_FAILED_KEPT:
                self.failed.append({"key": key, "error": error})

    def snapshot(self) -> dict[str, float | int]:
        d = asdict(self)
        d.pop("failed")
        return d

    def since(self, before: dict[str, float | int]) -> dict[str, float | int]:
        now = self.snapshot()
        return {k: now[k] - before.get(k, 0) for k in now}
