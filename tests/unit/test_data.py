from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kcm.config import DataConfig, GroupsConfig, StreamConfig, load_config
from kcm.data import (
    NO_LABEL,
    Batch,
    Task,
    batch_from_frame,
    build_bundle,
    group_bounds,
    long_tail_counts,
    make_long_tailed,
    split_stream,
    traffic_view,
)
from kcm.data.sources import load_banking77_task, load_csv_task
from kcm.errors import DataError

TEXT_TASK = Task(kind="text", label_names=("a", "b", "c"), text_col="text", label_col="label")
NUM_TASK = Task(
    kind="numeric", label_names=("x", "y"), feature_cols=("f1", "f2"), label_col="label"
)


@pytest.mark.parametrize("imb", [1.0, 10.0, 50.0, 100.0])
def test_long_tail_counts_follow_formula(imb: float) -> None:
    c, n_max = 20, 500
    counts = long_tail_counts(n_max, c, imb)
    for i in range(c):
        assert counts[i] == int(np.floor(n_max * imb ** (-i / (c - 1))))
    assert counts[0] == n_max and counts[-1] == int(n_max / imb)


def test_make_long_tailed_subsamples_to_the_formula() -> None:
    y = np.repeat(np.arange(10), 200)
    idx, order = make_long_tailed(y, 10, 50.0, seed=3, n_max=150)
    counts = np.bincount(y[idx], minlength=10)
    expected = long_tail_counts(150, 10, 50.0)
    assert [counts[c] for c in order] == expected.tolist()
    _idx2, order2 = make_long_tailed(y, 10, 50.0, seed=4, n_max=150)
    assert order.tolist() != order2.tolist()  # the class order is seeded


def test_group_bounds_scale_for_small_datasets() -> None:
    b = group_bounds(GroupsConfig(), n_max=500)
    assert (b.many, b.few, b.scale) == (100, 20, 1.0)
    small = group_bounds(GroupsConfig(), n_max=100)
    assert small.scale == pytest.approx(0.2)
    assert (
        small.group_of(21) == "many"
        and small.group_of(10) == "medium"
        and small.group_of(3) == "few"
    )


def _pool(n_classes: int = 8, per: int = 30) -> Batch:
    y = np.repeat(np.arange(n_classes), per)
    x = np.random.default_rng(0).normal(size=(len(y), 2)).astype(np.float32)
    return Batch(ids=np.arange(len(y)).astype(str).astype(object), inputs=x, label=y, gold=y.copy())


def test_split_stream_new_classes_appear_later_and_labels_hidden() -> None:
    pool = _pool()
    cfg = StreamConfig(n_batches=4, new_class_fraction=0.5, label_fraction=0.6)
    batches, first = split_stream(pool, 8, cfg, seed=0)
    assert sum(len(b) for b in batches) == len(pool)
    late = [c for c, s in first.items() if s > 0]
    assert len(late) == 4
    for c in late:
        assert c not in set(batches[0].gold)
        assert c in set(batches[first[c]].gold)
    hidden = np.concatenate([b.label == NO_LABEL for b in batches]).mean()
    assert 0.25 < hidden < 0.55
    for b in batches:  # hidden labels are kept for scoring
        assert (b.gold >= 0).all()


def test_traffic_view_follows_stream_proportions() -> None:
    test = _pool(n_classes=3, per=100)
    view = traffic_view(test, np.array([80, 15, 5]), size=2000, seed=0)
    share = np.bincount(view.gold, minlength=3) / 2000
    assert share == pytest.approx([0.8, 0.15, 0.05], abs=0.03)


def test_batch_from_frame_accepts_good_and_partially_labeled() -> None:
    df = pd.DataFrame({"id": ["1", "2"], "text": ["hi", "yo"], "label": ["a", None]})
    b = batch_from_frame(df, TEXT_TASK, "ok")
    assert b.label.tolist() == [0, NO_LABEL] and b.inputs == ["hi", "yo"]


@pytest.mark.parametrize(
    ("df", "task", "message"),
    [
        (pd.DataFrame({"text": [], "label": []}), TEXT_TASK, "is empty"),
        (pd.DataFrame({"txt": ["a"], "label": ["a"]}), TEXT_TASK, r"no column\(s\) \['text'\]"),
        (
            pd.DataFrame({"text": ["a"], "label": ["zzz"]}),
            TEXT_TASK,
            "not in the task's label set: 'zzz'",
        ),
        (pd.DataFrame({"text": ["a", " "], "label": ["a", "b"]}), TEXT_TASK, "empty 'text'"),
        (
            pd.DataFrame({"f1": [1.0, np.nan], "f2": [0.0, 1.0], "label": ["x", "y"]}),
            NUM_TASK,
            r"NaN or infinite features \(columns \['f1'\]\)",
        ),
        (pd.DataFrame({"f1": ["a"], "f2": [0.0], "label": ["x"]}), NUM_TASK, "not numeric"),
    ],
)
def test_batch_from_frame_refuses_bad_input(df: pd.DataFrame, task: Task, message: str) -> None:
    with pytest.raises(DataError, match=message):
        batch_from_frame(df, task, "bad")


def test_missing_label_column_when_labels_required() -> None:
    df = pd.DataFrame({"text": ["a"]})
    with pytest.raises(DataError, match="no label column 'label'"):
        batch_from_frame(df, TEXT_TASK, "b", allow_unlabeled=False)


def test_missing_banking77_dir_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pass --data-dir PATH"):
        load_banking77_task(DataConfig(dataset="banking77", data_dir=str(tmp_path / "nope")))


def test_csv_without_named_columns(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    pd.DataFrame({"sentence": ["a b", "c d"], "y": ["p", "q"]}).to_csv(p, index=False)
    cfg = DataConfig(dataset="csv", train=str(p), text_col="text", label_col="y")
    with pytest.raises(DataError, match=r"no column\(s\) \['text'\].*columns: \['sentence', 'y'\]"):
        load_csv_task(cfg, 0)


def test_csv_needs_one_input_kind(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="exactly one of --text-col"):
        load_csv_task(DataConfig(dataset="csv", train="x.csv"), 0)


def test_csv_and_parquet_with_stratified_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"f1": rng.normal(size=200), "f2": rng.normal(size=200), "cls": np.repeat(["u", "v"], 100)}
    )
    p = tmp_path / "d.parquet"
    df.to_parquet(p)
    task, train, test = load_csv_task(
        DataConfig(
            dataset="csv",
            train=str(p),
            feature_cols=["f1", "f2"],
            label_col="cls",
            test_fraction=0.25,
        ),
        0,
    )
    assert task.kind == "numeric" and task.label_names == ("u", "v")
    assert len(test) == 50 and np.bincount(test.gold).tolist() == [25, 25]
    assert not set(train.ids) & set(test.ids)


def test_not_a_csv(tmp_path: Path) -> None:
    p = tmp_path / "bin.parquet"
    p.write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="could not be read"):
        load_csv_task(DataConfig(dataset="csv", train=str(p), text_col="t"), 0)


def test_digits_bundle_is_disjoint_and_long_tailed() -> None:
    cfg = load_config(None)
    b = build_bundle(cfg)
    ids = [set(b.pretrain.ids), set(b.pool.ids), set(b.test.ids)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert len(b.stream) == cfg.data.stream.n_batches
    assert b.class_counts.max() / max(b.class_counts.min(), 1) > 10
    assert set(b.groups.values()) == {"many", "medium", "few"}
    s = b.summary()
    assert s["group_bounds"]["scale"] < 1.0
