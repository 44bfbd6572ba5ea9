"""The Great Expectations suite: accept, drop bad rows within the tolerance, or quarantine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kcm.adapters.expectations import unreadable, validate_frame
from kcm.config import ValidateConfig
from kcm.data.batch import Task

TEXT = Task(kind="text", label_names=("a", "b"), text_col="text", label_col="label")
NUM = Task(kind="numeric", label_names=("a", "b"), feature_cols=("f1", "f2"), label_col="label")


def _text(n: int = 100) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [str(i) for i in range(n)],
            "text": ["hello there"] * n,
            "label": ["a", "b"] * (n // 2),
        }
    )


def test_a_clean_batch_is_accepted() -> None:
    r = validate_frame(_text(), TEXT, ValidateConfig(), "ok")
    assert r.success and r.decision == "accept" and r.statistics["success_percent"] == 100.0


def test_a_few_bad_rows_are_dropped_and_reported() -> None:
    df = _text()
    df.loc[3, "text"] = None
    df.loc[7, "label"] = "zz"
    df.loc[9, "id"] = "1"  # duplicate id: both rows flagged
    r = validate_frame(df, TEXT, ValidateConfig(max_bad_fraction=0.05), "few-bad")
    assert r.decision == "drop_rows" and r.bad_rows == [1, 3, 7, 9]
    assert r.new_classes == ["zz"]
    kinds = {f["expectation"] for f in r.failures}
    assert {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_unique",
    } <= kinds
    assert "drop" in r.summary() and r.to_dict()["n_bad_rows"] == 4


def test_too_many_bad_rows_or_quarantine_policy_quarantines() -> None:
    df = _text()
    df.loc[:9, "label"] = "zz"
    assert validate_frame(df, TEXT, ValidateConfig(), "many-bad").decision == "quarantine"
    df = _text()
    df.loc[0, "text"] = "x" * 6000
    r = validate_frame(df, TEXT, ValidateConfig(on_bad_rows="quarantine"), "strict")
    assert r.decision == "quarantine" and "on_bad_rows is 'quarantine'" in r.reason


@pytest.mark.parametrize(
    ("df", "why"),
    [
        (_text().drop(columns=["label"]), "missing column(s) ['label']"),
        (_text().iloc[:0], "row_count"),
    ],
)
def test_table_level_failures_quarantine(df: pd.DataFrame, why: str) -> None:
    r = validate_frame(df, TEXT, ValidateConfig(), "bad")
    assert r.decision == "quarantine" and why in r.reason


def test_allowed_new_classes_are_not_failures() -> None:
    df = _text()
    df.loc[0, "label"] = "brand_new"
    r = validate_frame(df, TEXT, ValidateConfig(allow_new_classes=True), "new")
    assert r.decision == "accept" and r.new_classes == ["brand_new"]


def test_feature_ranges_and_nans() -> None:
    df = pd.DataFrame({"f1": np.linspace(0, 1, 40), "f2": np.zeros(40), "label": ["a"] * 40})
    df.loc[5, "f1"] = 50.0
    df.loc[6, "f2"] = np.nan
    r = validate_frame(
        df, NUM, ValidateConfig(max_bad_fraction=0.1), "num", {"f1": (0.0, 1.0), "f2": (0.0, 0.0)}
    )
    assert r.decision == "drop_rows" and r.bad_rows == [5, 6]


def test_unreadable_report() -> None:
    r = unreadable("x.bin", "not a table")
    assert r.decision == "quarantine" and "not a table" in r.summary()


def test_a_cell_that_is_not_a_number_fails_validation_not_a_later_step() -> None:
    df = pd.DataFrame({"f1": np.linspace(0, 1, 40), "f2": np.zeros(40), "label": ["a"] * 40})
    df = df.astype({"f1": object})
    df.loc[7, "f1"] = "abc"  # as read from a CSV with one bad cell
    r = validate_frame(df, NUM, ValidateConfig(max_bad_fraction=0.1), "num", None)
    assert r.decision == "drop_rows" and r.bad_rows == [7]
    item = next(f for f in r.failures if f["expectation"] == "expect_column_values_to_be_numbers")
    assert item["column"] == "f1" and item["examples"] == ["abc"]
    strict = validate_frame(df, NUM, ValidateConfig(on_bad_rows="quarantine"), "num", None)
    assert strict.decision == "quarantine"


def test_a_batch_above_the_size_limit_is_quarantined_with_the_fix() -> None:
    r = validate_frame(_text(120), TEXT, ValidateConfig(max_rows=100), "big")
    assert r.decision == "quarantine"
    assert "120 rows, more than validation.max_rows=100; split the file" in r.reason


def test_a_missing_column_is_named_alone_and_once() -> None:
    wide = Task(
        kind="numeric",
        label_names=("a", "b"),
        feature_cols=tuple(f"px{i}" for i in range(64)),
        label_col="label",
    )
    df = pd.DataFrame({f"px{i}": [0.0, 1.0] for i in range(64)} | {"id": ["0", "1"]})
    r = validate_frame(df, wide, ValidateConfig(), "no-label")
    assert r.decision == "quarantine"
    assert "missing column(s) ['label']" in r.reason and "px63" not in r.reason
    assert r.reason.count("label") <= 3  # the column, once, and the hint about empty labels


def test_in_a_project_validation_runs_through_a_checkpoint_and_builds_data_docs(tmp_path) -> None:
    df = _text()
    df.loc[3, "text"] = None
    r = validate_frame(
        df, TEXT, ValidateConfig(max_bad_fraction=0.05), "0001-batch-x.csv", project=tmp_path
    )
    assert r.decision == "drop_rows" and r.bad_rows == [3]  # the same decision as ephemeral
    gx = tmp_path / "gx"
    suite = gx / "expectations" / "kcm_batch_suite.json"
    import json

    kinds = {e["type"] for e in json.loads(suite.read_text())["expectations"]}
    assert "expect_column_values_to_not_be_null" in kinds  # the suite, reviewable JSON
    assert (gx / "checkpoints" / "kcm_batch_checkpoint.json").is_file()
    page = tmp_path / r.data_docs
    assert page.is_file() and "0001-batch-x.csv" in str(page)  # a page per batch, named after it
    assert (
        "0001-batch-x.csv"
        in (gx / "uncommitted" / "data_docs" / "local_site" / "index.html").read_text()
    )
    assert r.gx_result is not None and r.gx_result["success"] is False  # GX's own result
    again = validate_frame(_text(), TEXT, ValidateConfig(), "0002-batch-y.csv", project=tmp_path)
    assert again.decision == "accept" and "0002-batch-y.csv" in again.data_docs
