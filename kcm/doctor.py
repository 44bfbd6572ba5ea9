"""Checking a workspace before a run touches it, and repairing what can be repaired
(``kcm doctor [--repair]``; every run calls ``guard`` first, under the workspace's lock).

What is checked: the ledger reads and agrees with the files it describes (every batch file in
``data/batches/`` is one of its batches, every saved system above v0000 belongs to a committed
cycle); a workspace holding systems or batches has a ledger; the answer store opens and
passes SQLite's integrity check, and is there if the ledger says answers were paid for.
A damaged ledger stops the run (a ``LedgerDamaged`` fault naming the backup to restore);
a damaged answer store is kept aside and a new one started, saying what may be paid again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from kcm.workspace import Ledger, LedgerDamaged, Workspace

log = logging.getLogger(__name__)

STORES = ("large_cache.sqlite", "embeddings.sqlite")
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Finding:
    level: str  # fatal: the run stops | warning: the run goes on | fixed: repaired
    what: str

    def __str__(self) -> str:
        return f"{self.level}: {self.what}"


def _batch_files(ws: Workspace) -> list[str]:
    if not ws.batches.is_dir():
        return []
    return sorted(
        p.name
        for p in ws.batches.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".dvc")
    )


def _system_versions(ws: Workspace) -> list[int]:
    root = ws.state / "systems"
    if not root.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in root.glob("v[0-9]*") if p.is_dir())


def ledger_problem(ws: Workspace, raw: str | None = None) -> str | None:
    """Why the ledger cannot be trusted (None: it can), read from the file (or ``raw``),
    never saved. A state a kill leaves behind is not a problem: a batch file copied but not
    yet recorded (the next ingest records it), one learned version not yet committed."""
    learned = [v for v in _system_versions(ws) if v > 0]
    if raw is None and not ws.ledger_path.is_file():
        files = _batch_files(ws)
        if learned or files:
            return (
                f"{ws.ledger_path} is missing, yet the workspace holds {len(files)} batch "
                f"file(s) and {len(learned)} learned system(s)"
            )
        return None
    try:
        data = json.loads(raw if raw is not None else ws.ledger_path.read_text())
        ledger = Ledger.model_validate(data)
    except ValueError as err:
        return f"{ws.ledger_path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0]})"
    if ws.system_dir(0).is_dir() and not ({"challenger", "current"} & set(data)):
        return f"{ws.ledger_path} holds none of the workspace's records (no challenger)"
    recorded = len(ledger.order)
    lost = [
        f
        for f in _batch_files(ws)
        if f not in ledger.batches and f[:4].isdigit() and int(f[:4]) < recorded
    ]
    if lost:
        return (
            f"{ws.ledger_path} does not know {len(lost)} of the batch files in "
            f"{ws.batches} (e.g. {lost[0]}): it was replaced or rolled back"
        )
    last = max((int(c["version"]) for c in ledger.cycles if "version" in c), default=0)
    ahead = [v for v in learned if v > last]
    if len(ahead) > 1:  # a killed cycle leaves one at most; learn removes it
        return (
            f"{ws.ledger_path} has committed up to v{last:04d}, yet the workspace holds "
            f"learned systems {', '.join(f'v{v:04d}' for v in ahead[:5])}: it was replaced or "
            "rolled back"
        )
    return None


def _restore_hint(ws: Workspace) -> str:
    good = [p for p in ws.ledger_backups() if ledger_problem(ws, p.read_text()) is None]
    if not good:
        return f"no good backup is kept in {ws.state / 'backups'}: restore the workspace from yours"
    return (
        f"run `kcm doctor --repair --workdir {ws.root}` to restore the newest good backup "
        f"({ws.rel(good[0])}, written {time.ctime(good[0].stat().st_mtime)})"
    )


def paid_calls(ws: Workspace) -> int:
    """Large-model requests the ledger's cycles say were paid for."""
    if not ws.ledger_path.is_file():
        return 0
    try:
        cycles = json.loads(ws.ledger_path.read_text()).get("cycles", [])
    except ValueError:
        return 0
    return sum(int((c.get("large_ledger") or {}).get("requests", 0) or 0) for c in cycles)


def store_problem(path: Path) -> str | None:
    """Why a SQLite store cannot be used (None: it can, or it does not exist)."""
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head != SQLITE_HEADER:
        return "empty (0 bytes)" if not head else "not a SQLite database (damaged header)"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as err:
        return f"unreadable ({err})"
    return None if verdict == "ok" else f"fails SQLite's integrity check ({verdict})"


def set_aside(path: Path, why: str, paid: int) -> Path:
    """Keep a damaged store aside (``<name>.damaged-<time>``), never delete it."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    log.warning(
        "%s is %s: kept aside as %s and a new, empty store started; %s",
        path,
        why,
        aside.name,
        f"the answers it held (up to {paid} paid requests, by the ledger) are paid again "
        "only if the same inputs are asked again"
        if path.name == "large_cache.sqlite"
        else "its entries are computed again when needed",
    )
    return aside


def clean_temp(ws: Workspace) -> int:
    """Remove the temporary files of interrupted atomic writes (``.<name>.<hex>.tmp``)."""
    n = 0
    for folder in (ws.state, ws.batches, ws.quarantine, ws.root / "data" / "answers"):
        if folder.is_dir():
            for p in folder.rglob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def _missing_store(ws: Workspace, paid: int) -> list[Finding]:
    if paid and not (ws.state / "large_cache.sqlite").exists():
        return [
            Finding(
                "warning",
                f"the answer store {ws.state / 'large_cache.sqlite'} is missing, yet the "
                f"ledger counts {paid} paid request(s): asked again, they are paid again",
            )
        ]
    return []


def check(ws: Workspace) -> list[Finding]:
    """What is wrong with the workspace, changing nothing."""
    out = []
    problem = ledger_problem(ws)
    if problem:
        out.append(Finding("fatal", f"{problem}; {_restore_hint(ws)}"))
    for name in STORES:
        why = store_problem(ws.state / name)
        if why:
            out.append(Finding("warning", f"{ws.state / name} is {why}"))
    return out + _missing_store(ws, paid_calls(ws))


def guard(ws: Workspace) -> list[Finding]:
    """Before a run: clean temp files, stop on a damaged ledger (``LedgerDamaged``), set a
    damaged store aside. Returns the warnings (logged)."""
    clean_temp(ws)
    problem = ledger_problem(ws)
    if problem:
        raise LedgerDamaged(f"{problem}; {_restore_hint(ws)}")
    paid = paid_calls(ws)
    warnings = []
    for name in STORES:
        why = store_problem(ws.state / name)
        if why:
            set_aside(ws.state / name, why, paid)
            warnings.append(Finding("fixed", f"{ws.state / name} was {why}: set aside"))
    for f in _missing_store(ws, paid):  # each store checked once per run
        log.warning("%s", f.what)
        warnings.append(f)
    return warnings


def repair(ws: Workspace) -> list[Finding]:
    """Restore the newest good ledger backup (the damaged ledger kept aside), set damaged
    stores aside, clean temp files. Returns what was done and what is left."""
    done = []
    n = clean_temp(ws)
    if n:
        done.append(Finding("fixed", f"{n} temporary file(s) of interrupted writes removed"))
    if ledger_problem(ws):
        good = [p for p in ws.ledger_backups() if ledger_problem(ws, p.read_text()) is None]
        if good:
            if ws.ledger_path.exists():
                aside = ws.ledger_path.with_name(
                    f"ledger.json.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
                )
                os.replace(ws.ledger_path, aside)
                done.append(Finding("fixed", f"the damaged ledger kept as {ws.rel(aside)}"))
            ws.ledger_path.write_bytes(good[0].read_bytes())
            done.append(Finding("fixed", f"ledger restored from {ws.rel(good[0])}"))
    paid = paid_calls(ws)
    for name in STORES:
        why = store_problem(ws.state / name)
        if why:
            aside = set_aside(ws.state / name, why, paid)
            done.append(Finding("fixed", f"{name} was {why}: kept aside as {aside.name}"))
    return done + check(ws)
