"""The failure policy: whose fault an error is, and the one line an environment fault gets."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from kcm import policy
from kcm.errors import DataError, EnvironmentFault


def _raised(err: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        try:
            if cause is not None:
                raise cause
        except BaseException as c:
            raise err from c
        raise err
    except BaseException as e:
        return e


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (DataError("column 'x' holds 'abc'"), policy.BATCH),
        (RuntimeError("a step broke on this batch"), policy.BATCH),
        (OSError(errno.ENOSPC, "No space left on device"), policy.ENVIRONMENT),
        (sqlite3.DatabaseError("file is not a database"), policy.ENVIRONMENT),
        (EnvironmentFault("dvc refused"), policy.ENVIRONMENT),
        (_raised(RuntimeError("wrapped"), OSError(errno.EROFS, "read-only")), policy.ENVIRONMENT),
        (_raised(RuntimeError("wrapped"), DataError("bad value")), policy.BATCH),
    ],
)
def test_errors_are_sorted_by_whose_fault_they_are(err: BaseException, kind: str) -> None:
    assert policy.classify(err) == kind


def test_a_resource_error_of_a_library_is_the_environments() -> None:
    from mlflow.exceptions import MlflowException

    assert policy.classify(MlflowException("connection refused")) == policy.ENVIRONMENT
    assert policy.resource_of(MlflowException("x"))[0] == "MLflow"


def test_a_full_disk_is_named_as_such_wherever_it_surfaces() -> None:
    inner = sqlite3.OperationalError("database or disk is full")
    err = _raised(RuntimeError("(sqlite3.OperationalError) autoflush failed"), inner)
    fault = policy.environment_fault(err, "publish", "0003-b.csv")
    assert str(fault).startswith("the disk failed during publish of 0003-b.csv")
    assert "the disk is full: free space on it" in str(fault) and "\n" not in str(fault)
