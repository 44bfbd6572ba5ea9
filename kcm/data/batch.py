"""The unit of data that flows through kcm: a ``Batch`` of inputs with optional labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from kcm.errors import DataError

NO_LABEL = -1
#: an input of no known class (a user's out-of-scope query): its label, gold class or answer
OUT_OF_SCOPE = -2
#: the label an out-of-scope answer is delivered as (and read back from a label column)
OUT_OF_SCOPE_LABEL = "out_of_scope"


def label_name(task: Task, k: int) -> str:
    """The name of class ``k`` of ``task``, ``out_of_scope`` for ``OUT_OF_SCOPE``."""
    return OUT_OF_SCOPE_LABEL if k == OUT_OF_SCOPE else task.label_names[k]


def names_of(task: Task, y: np.ndarray) -> np.ndarray:
    """Label names of ``y`` (None where unknown, ``out_of_scope`` for ``OUT_OF_SCOPE``)."""
    names = np.asarray(task.label_names, dtype=object)
    out = np.where(y >= 0, names[np.clip(y, 0, None)], None)
    return np.where(y == OUT_OF_SCOPE, OUT_OF_SCOPE_LABEL, out)


@dataclass(frozen=True)
class Task:
    """What is being classified: the input kind, the label set and the file layout."""

    kind: Literal["text", "numeric"]
    label_names: tuple[str, ...]
    text_col: str | None = None
    feature_cols: tuple[str, ...] | None = None
    label_col: str = "label"
    id_col: str = "id"

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "label_names": list(self.label_names),
            "text_col": self.text_col,
            "feature_cols": list(self.feature_cols) if self.feature_cols else None,
            "label_col": self.label_col,
            "id_col": self.id_col,
        }

    @classmethod
    def from_dict(cls, t: dict[str, Any]) -> Task:
        return cls(
            kind=t["kind"],
            label_names=tuple(t["label_names"]),
            text_col=t["text_col"],
            feature_cols=tuple(t["feature_cols"]) if t["feature_cols"] else None,
            label_col=t["label_col"],
            id_col=t["id_col"],
        )

    @property
    def eval_col(self) -> str:
        """Simulations only: the true label of rows whose label the learner must not see.
        ``kcm feed`` writes it; the learner never reads it; only scoring does."""
        return f"{self.label_col}__eval"

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def label_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    @property
    def input_cols(self) -> list[str]:
        if self.kind == "text":
            assert self.text_col is not None
            return [self.text_col]
        return list(self.feature_cols or ())


@dataclass
class Batch:
    """Inputs (texts or a feature matrix), learner-visible labels and, in simulations, the
    true labels used only for scoring.

    ``label`` holds the class the learner is given, ``NO_LABEL`` (-1) where it sees none;
    ``gold`` holds the true class where it is known (-1 elsewhere), for scoring only.
    """

    ids: np.ndarray
    inputs: list[str] | np.ndarray
    label: np.ndarray
    gold: np.ndarray
    name: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.inputs) != n or len(self.label) != n or len(self.gold) != n:
            raise DataError(
                f"batch '{self.name}': ids, inputs and labels differ in length "
                f"({n}, {len(self.inputs)}, {len(self.label)}, {len(self.gold)})"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labeled(self) -> np.ndarray:
        return self.label != NO_LABEL

    def subset(self, idx: np.ndarray | Sequence[int], name: str | None = None) -> Batch:
        idx = np.asarray(idx, dtype=np.int64)
        inputs: list[str] | np.ndarray
        if isinstance(self.inputs, np.ndarray):
            inputs = self.inputs[idx]
        else:
            inputs = [self.inputs[i] for i in idx]
        return Batch(
            ids=self.ids[idx],
            inputs=inputs,
            label=self.label[idx],
            gold=self.gold[idx],
            name=self.name if name is None else name,
            meta=dict(self.meta),
        )

    def to_frame(self, task: Task, *, with_labels: bool = True) -> pd.DataFrame:
        """The batch in the file layout users drop into an inbox."""
        cols: dict[str, object] = {task.id_col: self.ids}
        if task.kind == "text":
            assert task.text_col is not None
            cols[task.text_col] = list(self.inputs)
        else:
            mat = np.asarray(self.inputs)
            for j, name in enumerate(task.feature_cols or ()):
                cols[name] = mat[:, j]
        if with_labels:
            cols[task.label_col] = names_of(task, self.label)
            hidden = (self.label == NO_LABEL) & (self.gold != NO_LABEL)
            if hidden.any():  # keep the gold class for scoring a simulation, apart from the label
                cols[task.eval_col] = names_of(task, self.gold)
        return pd.DataFrame(cols)


def concat_batches(batches: Sequence[Batch], name: str = "") -> Batch:
    if not batches:
        raise DataError("nothing to concatenate: no batches given")
    first = batches[0].inputs
    inputs: list[str] | np.ndarray
    if isinstance(first, np.ndarray):
        inputs = np.concatenate([np.asarray(b.inputs) for b in batches])
    else:
        inputs = [t for b in batches for t in b.inputs]
    return Batch(
        ids=np.concatenate([b.ids for b in batches]),
        inputs=inputs,
        label=np.concatenate([b.label for b in batches]),
        gold=np.concatenate([b.gold for b in batches]),
        name=name,
    )


def batch_from_frame(
    df: pd.DataFrame, task: Task, name: str = "", *, allow_unlabeled: bool = True
) -> Batch:
    """Turn a DataFrame in the task's layout into a Batch, refusing bad input loudly.

    An empty frame, a missing column, a label outside the task's label set or a NaN
    feature raises ``DataError`` naming the problem and the fix; nothing is half-used. The
    label ``out_of_scope`` (when not a class of the task) marks an input of no known class.
    """
    where = f"batch '{name}'" if name else "batch"
    if len(df) == 0:
        raise DataError(f"{where} is empty (0 rows): drop a file with at least one row")
    missing = [c for c in task.input_cols if c not in df.columns]
    if missing:
        raise DataError(
            f"{where} has no column(s) {missing} (columns: {list(df.columns)}): "
            f"rename them or pass the right --text-col/--feature-cols"
        )
    if task.kind == "text":
        col = df[task.text_col]
        bad = col.isna() | (col.astype(str).str.strip() == "")
        if bad.any():
            raise DataError(
                f"{where}: {int(bad.sum())} row(s) have an empty '{task.text_col}' "
                f"(first at row {int(np.flatnonzero(bad.to_numpy())[0])}): remove or fill them"
            )
        inputs: list[str] | np.ndarray = col.astype(str).tolist()
    else:
        feats = df[list(task.feature_cols or ())]
        try:
            mat = feats.to_numpy(dtype=np.float32)
        except (TypeError, ValueError):
            bad_cols = [c for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
            raise DataError(
                f"{where}: feature column(s) {bad_cols} are not numeric: convert them to numbers"
            ) from None
        nan_rows = ~np.isfinite(mat).all(axis=1)
        if nan_rows.any():
            bad_cols = [c for c in feats.columns if not np.isfinite(feats[c].to_numpy(float)).all()]
            raise DataError(
                f"{where}: {int(nan_rows.sum())} row(s) have NaN or infinite features "
                f"(columns {bad_cols}): drop or impute those rows before sending the batch"
            )
        inputs = mat
    if task.label_col in df.columns:
        index = {OUT_OF_SCOPE_LABEL: OUT_OF_SCOPE, **task.label_index()}
        raw = df[task.label_col]
        present = raw.notna()
        labels = raw[present].astype(str)
        unknown = sorted(set(labels) - set(index))
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise DataError(
                f"{where}: {len(unknown)} label(s) not in the task's label set: {shown}. "
                f"Fix the labels, or retrain with a label set that includes them"
            )
        y = np.full(len(df), NO_LABEL, dtype=np.int64)
        y[present.to_numpy()] = labels.map(index).to_numpy(dtype=np.int64)
    elif allow_unlabeled:
        y = np.full(len(df), NO_LABEL, dtype=np.int64)
    else:
        raise DataError(
            f"{where} has no label column '{task.label_col}': add it or pass --label-col NAME"
        )
    gold = y.copy()
    if task.eval_col in df.columns:  # simulations: the gold class of rows whose label is hidden
        index = {OUT_OF_SCOPE_LABEL: OUT_OF_SCOPE, **task.label_index()}
        hidden_gold = df[task.eval_col].map(
            lambda v: index.get(str(v), NO_LABEL) if pd.notna(v) else NO_LABEL
        )
        gold = np.where(y != NO_LABEL, y, hidden_gold.to_numpy(dtype=np.int64))
    if task.id_col in df.columns:
        ids = df[task.id_col].astype(str).to_numpy(dtype=object)
    else:
        ids = np.array([f"{name or 'row'}-{i}" for i in range(len(df))], dtype=object)
    return Batch(ids=ids, inputs=inputs, label=y, gold=gold, name=name)
