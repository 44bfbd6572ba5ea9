"""The failure policy, written once: whose fault is an error raised during a cycle?

A **batch fault** is the data's: validation refused it, or a step could not use one of its
values. It counts towards ``flow.max_attempts``; at that count the batch is quarantined with
its report and the run goes on to the next one.

An **environment fault** is everything around the run: the workspace's files and the disk,
the answer store, MLflow, DVC, git, Prefect, the plotting backend, the large model's
endpoint. It never counts against a batch: the run stops with one line naming the resource
and the fix (``kcm`` exits with status 4) and the batch waits for the next run.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

from kcm.errors import ConfigError, DataError, EnvironmentFault, LargeModelError

BATCH, ENVIRONMENT = "batch", "environment"

#: error modules that belong to a resource around the run (the module of the error's type)
RESOURCE_MODULES = {
    "mlflow": ("MLflow", "check registry.tracking_uri and that the tracking server is up"),
    "dvc": ("DVC", "run `dvc doctor` in the workspace, or set dvc.enabled: false"),
    "git": ("git", "check the workspace's git repository (`git status`)"),
    "prefect": ("Prefect", "check the Prefect API (`prefect config view`)"),
    "matplotlib": ("plotting", "set eval.plots: false to skip the plots"),
    "requests": ("the network", "check the endpoint's URL and the network"),
    "urllib3": ("the network", "check the endpoint's URL and the network"),
    "httpx": ("the network", "check the endpoint's URL and the network"),
    "sqlalchemy": ("MLflow's database", "check registry.tracking_uri and its database"),
}

_OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space on it",
    errno.EDQUOT: "the disk quota is exhausted: free space on it",
    errno.EACCES: "permission denied: give the run's user write access",
    errno.EPERM: "operation not permitted: give the run's user write access",
    errno.EROFS: "the file system is read-only: mount it writable or move the workspace",
    errno.ENAMETOOLONG: "a file name is too long for the file system: shorten it",
    errno.EIO: "an input/output error: check the disk",
}


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def classify(err: BaseException) -> str:
    """``batch`` or ``environment``: the first error of the chain that settles it decides
    (an error kcm raised about the data is the batch's; a resource's is the environment's).
    Anything else counts against the batch, so a batch that always breaks a step is set
    aside after ``flow.max_attempts`` instead of blocking the loop."""
    for e in _chain(err):
        if isinstance(e, (DataError, ConfigError)):
            return BATCH
        if isinstance(e, (EnvironmentFault, LargeModelError, sqlite3.Error, OSError)):
            return ENVIRONMENT
        if type(e).__module__.split(".")[0] in RESOURCE_MODULES:
            return ENVIRONMENT
    return BATCH


def resource_of(err: BaseException) -> tuple[str, str]:
    """(the resource that failed, the fix) for an environment fault. A full disk is named
    as such wherever it surfaces (SQLite inside MLflow says "database or disk is full")."""
    for e in _chain(err):
        full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or "disk is full" in str(e) or "No space left" in str(e):
            return "the disk", _OS_FIXES[errno.ENOSPC]
    for e in _chain(err):
        if isinstance(e, EnvironmentFault):
            return "the workspace", "see the message"
        if isinstance(e, LargeModelError):
            return "the large-model endpoint", "check large.* (URL, key, model) and the endpoint"
        if isinstance(e, sqlite3.Error):
            return "a SQLite store", "run `kcm doctor` on the workspace"
        if isinstance(e, OSError):
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            fix = _OS_FIXES.get(e.errno or -1, "check the file system")
            return f"the file system{where}", fix
        top = type(e).__module__.split(".")[0]
        if top in RESOURCE_MODULES:
            return RESOURCE_MODULES[top]
    return "the environment", "see the error"


def environment_fault(err: BaseException, step: str, batch: str) -> EnvironmentFault:
    """One line: what failed, where, the fix, and that the batch waits."""
    if isinstance(err, EnvironmentFault):
        return err
    resource, fix = resource_of(err)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return EnvironmentFault(
        f"{resource} failed during {step} of {batch}: {type(err).__name__}: {first[:300]} "
        f"({fix}); nothing is counted against a batch: the next run retries"
    )
