"""One run per workspace: an exclusive lock on ``state/run.lock`` held for a whole run.

The lock is an ``fcntl.flock`` on an open file, so the kernel releases it when the holder
exits in any way, SIGKILL included: a lock is never left stale. The file also names the
holder (pid, host, start time, command) so that a second run can say who is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kcm.errors import KCMError


class WorkspaceBusy(KCMError, RuntimeError):
    """Another kcm run holds the workspace."""


def holder(path: Path) -> dict[str, Any]:
    """Who holds (or last held) the lock at ``path``; {} when unknown."""
    try:
        return dict(json.loads(path.read_text() or "{}"))
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def exclusive(
    root: str | Path, timeout: float = 0.0, poll: float = 0.2, lock: str = "run.lock"
) -> Iterator[Path]:
    """Hold the workspace at ``root`` for the block (``lock``: another lock file under
    ``state/``, e.g. a scoring job's); wait at most ``timeout`` seconds for another holder to
    finish, then raise ``WorkspaceBusy`` naming it."""
    path = Path(root) / "state" / lock
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + max(0.0, timeout)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    h = holder(path)
                    who = (
                        f"pid {h.get('pid', '?')} on {h.get('host', '?')}, started "
                        f"{h.get('started', '?')}"
                    )
                    if lock != "run.lock":
                        raise WorkspaceBusy(
                            f"{path.stem} in {Path(root)} is running in another process "
                            f"({who}): wait for it to finish"
                        ) from None
                    raise WorkspaceBusy(
                        f"{Path(root)} is in use by another kcm run ({who}): one run per "
                        "workspace; wait for it to finish, or set flow.lock_timeout=SECONDS "
                        "to wait for it"
                    ) from None
                time.sleep(poll)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv[:4]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
