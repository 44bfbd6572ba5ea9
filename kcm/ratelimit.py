"""A client-side rate limiter for an LLM endpoint: requests and tokens per minute, the
provider's ``Retry-After`` pauses, and a bound on requests in flight.

Pacing is a generic cell-rate algorithm: each request takes the next free slot of the request
clock and of the token clock (one request every 60/rpm s, one token every 60/tpm s), so no
window of a minute ever holds more than the limits allow and there is no burst to refuse.
The clocks live in a SQLite file (``state/limits.sqlite``) when a workspace is given, so every
thread, chunk and process of a run draws on the same limits; else in memory (one process).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
#: pace 1 % under the limit: the network's jitter never bunches two requests into one window
MARGIN = 1.01
_GUARD = threading.Lock()


class RateLimiter:
    """Limits for endpoint ``key``. ``acquire(tokens)`` waits for a slot and returns the
    seconds it waited; ``pause(seconds)`` holds every caller (a 429's Retry-After)."""

    def __init__(
        self,
        key: str,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        concurrency: int = 4,
        path: str | Path | None = None,
    ) -> None:
        self.key = key
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._db = sqlite3.connect(
            str(self.path) if self.path else ":memory:",
            check_same_thread=False,
            timeout=60,
            isolation_level=None,
        )
        self._db.execute("PRAGMA synchronous = OFF")  # pacing state: losing it is harmless
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS clocks (key TEXT PRIMARY KEY, requests REAL, "
            "tokens REAL, paused REAL)"
        )
        self._db.execute("INSERT OR IGNORE INTO clocks VALUES (?, 0, 0, 0)", (key,))

    @classmethod
    def shared(
        cls,
        key: str,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        concurrency: int,
        path: str | Path | None = None,
    ) -> RateLimiter:
        """One limiter per endpoint and file in this process (its threads share it)."""
        slot = (key, str(path or ""))
        with _GUARD:
            lim = _LIMITERS.get(slot)
            if lim is None or (lim.rpm, lim.tpm) != (requests_per_minute, tokens_per_minute):
                lim = cls(key, requests_per_minute, tokens_per_minute, concurrency, path)
                _LIMITERS[slot] = lim
            return lim

    def _reserve(self, tokens: float) -> float:
        """Take the next slot; returns the time it starts (with no limit configured: now, or
        when a Retry-After pause ends; a read, no write)."""
        if not (self.rpm or self.tpm):
            return max(time.time(), self.paused_until())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                req, tok, paused = self._db.execute(
                    "SELECT requests, tokens, paused FROM clocks WHERE key = ?", (self.key,)
                ).fetchone()
                t = time.time()
                start = max(t, paused, req if self.rpm else 0.0, tok if self.tpm else 0.0)
                if self.rpm:
                    req = start + MARGIN * 60.0 / self.rpm
                if self.tpm:
                    tok = start + MARGIN * 60.0 * max(tokens, 1.0) / self.tpm
                self._db.execute(
                    "UPDATE clocks SET requests = ?, tokens = ? WHERE key = ?", (req, tok, self.key)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return start

    def acquire(self, tokens: float = 0.0) -> float:
        """Wait for the next slot for a request of about ``tokens`` tokens; the seconds
        waited."""
        t0 = time.time()
        start = self._reserve(tokens)
        while True:
            delay = start - time.time()
            if delay > 0:
                time.sleep(delay)
            paused = self.paused_until()
            if paused <= time.time() + 1e-3:
                break
            start = paused  # a Retry-After came in while we waited: wait it out too
        return max(0.0, time.time() - t0)

    def paused_until(self) -> float:
        with self._lock:
            row = self._db.execute(
                "SELECT paused FROM clocks WHERE key = ?", (self.key,)
            ).fetchone()
        return float(row[0])

    def pause(self, seconds: float) -> None:
        """Hold every caller of this endpoint for ``seconds`` (from now)."""
        until = time.time() + max(0.0, seconds)
        with self._lock:
            self._db.execute(
                "UPDATE clocks SET paused = MAX(paused, ?) WHERE key = ?", (until, self.key)
            )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """At most ``concurrency`` requests of this process in flight to the endpoint."""
        with self._slots:
            yield
