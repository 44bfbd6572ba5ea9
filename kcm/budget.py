"""Spend caps: what one purpose (serving, evaluation) may spend per run and per rolling day.

Every admitted call is first *reserved* at its estimated price (an upper bound), then
*settled* at what it cost. Both are rows of a SQLite file (``state/spend.sqlite``) that every
thread and process of a workspace shares, so a restart does not reset the day and two runs
cannot spend the same budget twice. A reservation a crash left unsettled stays counted: the
call may have been paid.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DAY = 86_400.0
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spend (id INTEGER PRIMARY KEY, t REAL, purpose TEXT, run TEXT, "
    "amount REAL, settled INTEGER)",
    "CREATE INDEX IF NOT EXISTS spend_t ON spend (purpose, t)",
    "CREATE TABLE IF NOT EXISTS largest (purpose TEXT PRIMARY KEY, amount REAL)",
)


def now() -> float:
    """The clock the caps are kept by (the fault suite moves it a day on)."""
    return time.time()


@dataclass
class Ticket:
    """What ``admit`` let through: the first ``n`` calls, reserved as row ``row``."""

    n: int
    row: int | None
    reserved: float


class SpendGuard:
    """The caps of one ``purpose`` for run ``run``; ``path`` None keeps the record in
    memory (one process). ``per_run`` / ``per_day`` None: no cap of that kind."""

    def __init__(
        self,
        purpose: str,
        run: str,
        per_run: float | None,
        per_day: float | None,
        path: str | Path | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.purpose, self.run = purpose, run
        self.per_run, self.per_day = per_run, per_day
        self.path = Path(path) if path else None
        self.clock = clock or now
        self.refused_ = 0
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(self.path) if self.path else ":memory:",
            check_same_thread=False,
            timeout=60,
            isolation_level=None,
        )
        for stmt in _SCHEMA:
            self._db.execute(stmt)
        cutoff = self.clock() - 2 * DAY  # older rows count towards no window of a later run
        self._db.execute(
            "DELETE FROM spend WHERE t < ? AND run != ? AND settled = 1", (cutoff, run)
        )

    @property
    def capped(self) -> bool:
        return self.per_run is not None or self.per_day is not None

    def _spent(self) -> tuple[float, float]:
        run = self._db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM spend WHERE purpose = ? AND run = ?",
            (self.purpose, self.run),
        ).fetchone()[0]
        day = self._db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM spend WHERE purpose = ? AND t > ?",
            (self.purpose, self.clock() - DAY),
        ).fetchone()[0]
        return float(run), float(day)

    def _left(self, run: float, day: float) -> float:
        left = float("inf")
        if self.per_run is not None:
            left = min(left, self.per_run - run)
        if self.per_day is not None:
            left = min(left, self.per_day - day)
        return left

    def remaining(self) -> float | None:
        """What may still be spent now (None: no cap)."""
        if not self.capped:
            return None
        with self._lock:
            return max(0.0, self._left(*self._spent()))

    def spent(self) -> dict[str, float]:
        with self._lock:
            run, day = self._spent()
        return {"run": run, "day": day}

    def exhausted(self) -> bool:
        """True when not even the dearest call seen so far would fit."""
        left = self.remaining()
        if left is None:
            return False
        with self._lock:
            row = self._db.execute(
                "SELECT amount FROM largest WHERE purpose = ?", (self.purpose,)
            ).fetchone()
        return left <= 0 or (row is not None and left < row[0])

    def admit(self, estimates: Sequence[float]) -> Ticket:
        """Reserve the longest prefix of these calls whose estimated prices fit the caps."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                left = self._left(*self._spent())
                n, acc = 0, 0.0
                for e in estimates:
                    if acc + e > left + 1e-12:
                        break
                    acc += e
                    n += 1
                row = None
                if n:
                    row = self._db.execute(
                        "INSERT INTO spend (t, purpose, run, amount, settled) VALUES (?, ?, ?, ?, 0)",
                        (self.clock(), self.purpose, self.run, acc),
                    ).lastrowid
                if estimates:
                    self._db.execute(
                        "INSERT INTO largest VALUES (?, ?) ON CONFLICT(purpose) DO UPDATE SET "
                        "amount = MAX(amount, excluded.amount)",
                        (self.purpose, max(estimates)),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.refused_ += len(estimates) - n
        return Ticket(n=n, row=row, reserved=acc)

    def settle(self, ticket: Ticket, actual: float) -> None:
        """The reservation becomes what the calls cost."""
        if ticket.row is None:
            return
        with self._lock:
            self._db.execute(
                "UPDATE spend SET amount = ?, settled = 1 WHERE id = ?", (actual, ticket.row)
            )

    def close(self) -> None:
        self._db.close()
