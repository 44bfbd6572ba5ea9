"""Child processes that do not outlive kcm: each in its own process group (so it and its
children can be stopped together) and, on Linux, sent SIGTERM by the kernel when the kcm
process that started it dies, SIGKILL included (``PR_SET_PDEATHSIG``); and a run that stops
within seconds of SIGTERM, leaving no child behind (``stop_within``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)
_LOCAL = {"send_to_api": False}  # the watcher logs outside any flow run (Prefect's API handler)

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


def tied_subprocess_module() -> Any:
    """A stand-in for the ``subprocess`` module whose ``Popen`` ties each child to the
    process that starts it (as ``popen_tied``, in the same session): for a library that
    starts a helper process itself (Prefect's temporary API server)."""
    import types

    class Tied(types.ModuleType):
        kcm_tied = True

        def __getattr__(self, name: str) -> Any:
            return getattr(subprocess, name)

        @staticmethod
        def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
            kwargs.setdefault("preexec_fn", _tie_to(os.getpid()))
            return subprocess.Popen(*args, **kwargs)

    return Tied("subprocess")


def stop_processes(procs: Sequence[Any], wait: float) -> None:
    """SIGTERM each (psutil) process, give them ``wait`` seconds, then SIGKILL what is left."""
    import psutil

    for k in procs:
        with contextlib.suppress(psutil.Error):
            k.terminate()
    _, alive = psutil.wait_procs(procs, timeout=wait)
    for k in alive:
        with contextlib.suppress(psutil.Error):
            k.kill()


def stop_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a child started in its own session (``popen_tied``, ``start_new_session``) and
    every process it started: SIGTERM to its group, ``grace`` seconds, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def kill_children(wait: float = 3.0) -> None:
    """Terminate every process this one started (recursively), then kill what is left."""
    import psutil

    stop_processes(psutil.Process().children(recursive=True), wait)


@contextlib.contextmanager
def stop_within(grace: float) -> Iterator[None]:
    """Stop within ``grace`` seconds of SIGTERM or SIGINT, leaving no child process running.

    Prefect turns SIGTERM into a crash that it reports to its API, retrying for minutes when
    the API is down; and it starts a temporary API server that survives a signalled exit. So:
    a watcher thread is woken by the signal itself (``signal.set_wakeup_fd``: whichever Python
    handler is installed, Prefect's included), and when the run has not ended ``grace``
    seconds later it stops the children and SIGKILLs the process; and the SIGTERM that
    Prefect re-sends once it has reported the crash lands in a handler that stops the
    children before the process exits. Every step of a run survives SIGKILL (the fault
    suite), so cutting the crash report short loses nothing. Main thread only (a no-op
    elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                got = os.read(r, 64)
            except OSError:
                return
            if not got or done.is_set():
                return
            if {signal.SIGTERM, signal.SIGINT} & set(got):
                log.warning("signal received: stopping (at most %.0fs)", grace, extra=_LOCAL)
                if not done.wait(grace):
                    log.warning(
                        "still running %.0fs after the signal: killing it", grace, extra=_LOCAL
                    )
                    kill_children(wait=1.0)
                    os.kill(os.getpid(), signal.SIGKILL)
                return

    def on_term(signum: int, _frame: Any) -> None:
        kill_children()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    old_term = signal.signal(signal.SIGTERM, on_term)
    watcher = threading.Thread(target=watch, name="kcm-stop-within", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.signal(signal.SIGTERM, old_term)
        signal.set_wakeup_fd(old_fd)
        with contextlib.suppress(OSError):
            os.write(w, b"\0")  # wake the watcher
        watcher.join(timeout=1.0)
        os.close(w)
        os.close(r)
