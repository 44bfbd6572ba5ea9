"""Child processes that do not outlive kcm: each in its own process group (so it and its
children can be stopped together) and, on Linux, sent SIGTERM by the kernel when the kcm
process that started it dies, SIGKILL included (``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1


def _tie_to(parent: int) -> Callable[[], None]:
    def tie() -> None:  # runs in the child, between fork and exec
        if sys.platform.startswith("linux"):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the tie was made
            os.kill(os.getpid(), signal.SIGKILL)

    return tie


def popen_tied(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(cmd)`` in a new session, terminated when this process dies."""
    return subprocess.Popen(
        list(cmd), start_new_session=True, preexec_fn=_tie_to(os.getpid()), **kwargs
    )
