"""Metrics as small objects with ``update / result / reset`` (Avalanche style), plus BWT and
forgetting on an accuracy matrix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from kcm.data.batch import NO_LABEL, OUT_OF_SCOPE


class Accuracy:
    """Fraction of correct answers among samples with a known label (a class, or
    ``OUT_OF_SCOPE``: right when answered out of scope)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, pred: np.ndarray, true: np.ndarray) -> None:
        known = np.asarray(true) != NO_LABEL
        self.correct += int((np.asarray(pred)[known] == np.asarray(true)[known]).sum())
        self.total += int(known.sum())

    def result(self) -> float | None:
        return self.correct / self.total if self.total else None


class PerClassAccuracy:
    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.reset()

    def reset(self) -> None:
        self.correct = np.zeros(self.n_classes, dtype=np.int64)
        self.total = np.zeros(self.n_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, true: np.ndarray) -> None:
        true = np.asarray(true)
        known = true >= 0
        t, p = true[known], np.asarray(pred)[known]
        self.total += np.bincount(t, minlength=self.n_classes)
        self.correct += np.bincount(t[p == t], minlength=self.n_classes)

    def result(self) -> np.ndarray:
        """Per-class accuracy; NaN for classes with no sample."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, self.correct / np.maximum(self.total, 1), np.nan)


class GroupAccuracy:
    """Sample-level accuracy within each Many / Medium / Few group."""

    def __init__(
        self, groups: Mapping[int, str], names: Iterable[str] = ("many", "medium", "few")
    ) -> None:
        self.groups = dict(groups)
        self.names = tuple(names)
        self.reset()

    def reset(self) -> None:
        self.acc = {g: Accuracy() for g in self.names}

    def update(self, pred: np.ndarray, true: np.ndarray) -> None:
        true = np.asarray(true)
        g_of = np.array([self.groups.get(int(t), "") for t in true], dtype=object)
        for g, m in self.acc.items():
            sel = g_of == g
            m.update(np.asarray(pred)[sel], true[sel])

    def result(self) -> dict[str, float | None]:
        return {g: m.result() for g, m in self.acc.items()}


class OutOfScope:
    """How inputs of no known class fare. ``answered``: answers delivered as ``out_of_scope``;
    on inputs whose gold is ``OUT_OF_SCOPE``: ``recall`` (answered out of scope) and
    ``confident_wrong`` (the small model answered them itself: routed small, so confidently
    and necessarily wrong)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.answered = 0
        self.n_oos = 0
        self.recalled = 0
        self.small = 0

    def update(self, pred: np.ndarray, true: np.ndarray, to_large: np.ndarray) -> None:
        pred, true, to_large = np.asarray(pred), np.asarray(true), np.asarray(to_large, bool)
        self.answered += int((pred == OUT_OF_SCOPE).sum())
        oos = true == OUT_OF_SCOPE
        self.n_oos += int(oos.sum())
        self.recalled += int((pred[oos] == OUT_OF_SCOPE).sum())
        self.small += int((~to_large[oos]).sum())

    def result(self) -> dict[str, float | int | None]:
        n = self.n_oos
        return {
            "answered": self.answered,
            "n": n,
            "recall": self.recalled / n if n else None,
            "confident_wrong": self.small / n if n else None,
        }


class LargeCallRate:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.large = 0
        self.total = 0

    def update(self, to_large: np.ndarray) -> None:
        self.large += int(np.asarray(to_large).sum())
        self.total += len(to_large)

    def result(self) -> float | None:
        return self.large / self.total if self.total else None


def auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for ``positive`` (None if one class only)."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, score))


def bwt(R: list[list[float | None]]) -> float | None:
    """Backward transfer: mean over earlier tasks of R[T-1][j] - R[j][j]."""
    T = len(R)
    vals = [
        R[T - 1][j] - R[j][j]
        for j in range(T - 1)
        if R[T - 1][j] is not None and R[j][j] is not None
    ]  # type: ignore[operator]
    return float(np.mean(vals)) if vals else None


def forgetting(R: list[list[float | None]]) -> float | None:
    """Mean over earlier tasks of the largest drop from any earlier row to the last row."""
    T = len(R)
    vals = []
    for j in range(T - 1):
        last = R[T - 1][j]
        past = [R[i][j] for i in range(j, T - 1) if R[i][j] is not None]
        if last is None or not past:
            continue
        vals.append(max(past) - last)  # type: ignore[operator]
    return float(np.mean(vals)) if vals else None


@dataclass
class AccuracyMatrix:
    """R[i][j]: mean per-class accuracy on batch j's classes after cycle i (lower triangle).

    Stores the per-class accuracy after every cycle and the class set of every batch, so it
    grows across runs (``to_dict``/``from_dict``) and a restricted view (a group's classes)
    can be derived.
    """

    tasks: list[list[int]] = field(default_factory=list)
    per_class: list[list[float | None]] = field(default_factory=list)

    def add_task(self, classes: Iterable[int]) -> None:
        self.tasks.append(sorted({int(c) for c in classes}))

    def update(self, per_class_acc: np.ndarray) -> None:
        """Record the per-class accuracy after the latest cycle (one row)."""
        self.per_class.append([None if np.isnan(a) else float(a) for a in per_class_acc])

    def reset(self) -> None:
        self.tasks.clear()
        self.per_class.clear()

    def result(self, classes: Iterable[int] | None = None) -> list[list[float | None]]:
        keep = None if classes is None else {int(c) for c in classes}
        R: list[list[float | None]] = []
        for i, row in enumerate(self.per_class):
            out: list[float | None] = []
            for j in range(min(i + 1, len(self.tasks))):
                cls = [c for c in self.tasks[j] if keep is None or c in keep]
                vals = [row[c] for c in cls if c < len(row) and row[c] is not None]
                out.append(float(np.mean(vals)) if vals else None)
            R.append(out)
        return R

    def summary(self, few: Iterable[int]) -> dict[str, float | None]:
        R, Rf = self.result(), self.result(few)
        return {
            "bwt": bwt(R),
            "forgetting": forgetting(R),
            "bwt_few": bwt(Rf),
            "forgetting_few": forgetting(Rf),
        }

    def to_dict(self) -> dict[str, object]:
        return {"tasks": self.tasks, "per_class": self.per_class}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> AccuracyMatrix:
        return cls(
            tasks=[list(t) for t in d.get("tasks", [])],  # type: ignore[union-attr]
            per_class=[list(r) for r in d.get("per_class", [])],
        )  # type: ignore[union-attr]
