"""Named points where the fault suite kills a run on purpose (``KCM_FAILPOINT=<name>``).

``reach(name)`` does nothing unless the environment names that point; then the process
sends itself SIGKILL there, exactly as an OOM killer or a power cut would stop it. Each
point sits between two writes whose order the crash-safety of a step depends on.
"""

from __future__ import annotations

import os
import signal

ENV = "KCM_FAILPOINT"


def reach(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
