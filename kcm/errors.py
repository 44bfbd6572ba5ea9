"""Errors whose messages name the problem and the fix."""

from __future__ import annotations


class KCMError(Exception):
    """Base class of every error kcm raises on purpose."""


class ConfigError(KCMError, ValueError):
    """A configuration value is unknown, ill-typed or inconsistent."""


class DataError(KCMError, ValueError):
    """Input data is missing, malformed or inconsistent with the task."""


class NotFittedError(KCMError, RuntimeError):
    """A model was used before it was fitted."""

    def __init__(self, obj: object) -> None:
        super().__init__(
            f"This {type(obj).__name__} is not fitted yet: call fit first (or load a fitted one)."
        )


class EnvironmentFault(KCMError, RuntimeError):
    """Something around the run refused an operation (git, DVC, a remote, the disk), not the
    data: no batch is at fault and none is counted against ``flow.max_attempts``. The run
    stops with one line naming the file or resource and the fix; the batch waits."""


class LargeModelError(KCMError, RuntimeError):
    """The large model could not answer, even after retries."""


def check_is_fitted(obj: object, attr: str) -> None:
    """Raise NotFittedError unless ``obj`` has the learned attribute ``attr``."""
    if getattr(obj, attr, None) is None:
        raise NotFittedError(obj)


class RegistryError(KCMError, LookupError):
    """A model registry operation that cannot be done (unknown version, nothing to roll back)."""


class NoWorkspace(KCMError, FileNotFoundError):
    """A run was asked on a folder that holds no workspace (``kcm init`` creates one): a
    mistyped path must not become a new, empty project that bootstraps and pays from scratch."""

    @classmethod
    def of(cls, root: object) -> NoWorkspace:
        return cls(
            f"{root} holds no kcm workspace (no state/ledger.json): create it with "
            f"`kcm init --workdir {root}` and the project's --config / --set (or pass --init), "
            "or check the path"
        )
