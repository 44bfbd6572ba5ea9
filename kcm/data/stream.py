"""Long-tail construction (CIFAR-100-LT style), Many/Medium/Few groups and the batch stream."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from kcm.config import DataConfig, GroupsConfig, KCMConfig, StreamConfig
from kcm.data.batch import NO_LABEL, OUT_OF_SCOPE, Batch, Task, batch_from_frame, concat_batches
from kcm.data.sources import load_source, read_table, stratified_split
from kcm.errors import DataError

Group = Literal["many", "medium", "few"]
GROUPS: tuple[Group, ...] = ("many", "medium", "few")


def long_tail_counts(n_max: int, n_classes: int, imbalance_factor: float) -> np.ndarray:
    """``floor(n_max * IF^(-i/(C-1)))`` for class ranks i = 0..C-1."""
    if n_classes == 1:
        return np.array([n_max])
    i = np.arange(n_classes)
    return np.floor(n_max * imbalance_factor ** (-i / (n_classes - 1)) + 1e-9).astype(np.int64)


def make_long_tailed(
    y: np.ndarray, n_classes: int, imbalance_factor: float, seed: int, n_max: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample indices so class ranks follow the long-tail formula.

    The class order is a seeded permutation. ``n_max`` defaults to the median class size;
    a class with fewer samples than its quota keeps all it has (the quota is recorded).
    Returns (indices, class_order).
    """
    rng = np.random.default_rng(seed)
    available = np.bincount(y[y >= 0], minlength=n_classes)
    order = rng.permutation(n_classes)
    if n_max is None:
        n_max = int(np.median(available[available > 0]))
    quota = long_tail_counts(n_max, n_classes, imbalance_factor)
    keep: list[np.ndarray] = []
    for rank, c in enumerate(order):
        idx = rng.permutation(np.flatnonzero(y == c))
        keep.append(idx[: max(int(quota[rank]), 0)])
    return np.sort(np.concatenate(keep)), order


@dataclass(frozen=True)
class GroupBounds:
    many: float
    few: float
    scale: float

    def group_of(self, count: int) -> Group:
        if count > self.many:
            return "many"
        if count < self.few:
            return "few"
        return "medium"


def group_bounds(cfg: GroupsConfig, n_max: int) -> GroupBounds:
    """The boundaries, scaled by n_max / reference_max for datasets with small head classes."""
    scale = min(1.0, n_max / cfg.reference_max)
    return GroupBounds(many=cfg.many * scale, few=cfg.few * scale, scale=scale)


def assign_groups(counts: np.ndarray, bounds: GroupBounds) -> dict[int, Group]:
    return {c: bounds.group_of(int(n)) for c, n in enumerate(counts) if n > 0}


def split_stream(
    pool: Batch, n_classes: int, cfg: StreamConfig, seed: int
) -> tuple[list[Batch], dict[int, int]]:
    """Split the long-tailed pool into K batches.

    A ``new_class_fraction`` of the classes (drawn, seeded, from outside the largest quarter)
    is absent from batch 0 and first appears in a later batch; every class is spread evenly
    over the batches from its first one on. Labels are
    hidden from the learner for ``1 - label_fraction`` of each batch (kept for scoring).
    Returns the batches and each class's first batch.
    """
    rng = np.random.default_rng(seed + 1)
    k = cfg.n_batches
    counts = np.bincount(pool.gold, minlength=n_classes)
    present = np.flatnonzero(counts)
    n_late = math.floor(len(present) * cfg.new_class_fraction)
    # new classes come from outside the head (the largest quarter of classes is there from
    # the start), as new intents usually arrive rare; this also keeps batch sizes even
    by_size = present[np.argsort(-counts[present], kind="stable")]
    candidates = by_size[math.ceil(len(present) / 4) :]
    n_late = min(n_late, len(candidates))
    late = rng.choice(candidates, size=n_late, replace=False) if n_late else np.array([], int)
    start = {int(c): 0 for c in present}
    for c in late:
        start[int(c)] = int(rng.integers(1, k))
    where = np.empty(len(pool), dtype=np.int64)
    for c in present:
        idx = np.flatnonzero(pool.gold == c)
        s = start[int(c)]
        # spread evenly over the class's active batches, in a seeded order
        slots = np.resize(rng.permutation(np.arange(s, k)), len(idx))
        where[rng.permutation(idx)] = slots
    batches = []
    for b in range(k):
        idx = np.flatnonzero(where == b)
        idx = rng.permutation(idx)
        batch = pool.subset(idx, name=f"batch-{b:03d}")
        if cfg.label_fraction < 1.0:
            hide = rng.random(len(batch)) >= cfg.label_fraction
            batch.label = batch.label.copy()
            batch.label[hide] = NO_LABEL
        if len(batch) == 0:
            raise DataError(
                f"stream batch {b} is empty: the pool has {len(pool)} samples for "
                f"{k} batches; lower data.stream.n_batches or the imbalance factor"
            )
        batches.append(batch)
    return batches, start


def hold_out_classes(
    task: Task, splits: list[Batch], k: int, seed: int
) -> tuple[Task, list[Batch], list[Batch], tuple[str, ...]]:
    """Hold ``k`` classes (seeded) back from ``task``: the task without them, each split's
    in-scope rows (classes renumbered) and its held-back rows (label and gold
    ``OUT_OF_SCOPE``), and the held-back class names."""
    if not 0 < k <= task.n_classes - 2:
        raise DataError(
            f"data.out_of_scope_classes={k}: hold back between 1 and {task.n_classes - 2} of "
            f"the {task.n_classes} classes (at least 2 must stay in the task)"
        )
    held = np.sort(np.random.default_rng(seed + 5).choice(task.n_classes, k, replace=False))
    kept = np.setdiff1d(np.arange(task.n_classes), held)
    new = np.full(task.n_classes, NO_LABEL, np.int64)
    new[kept] = np.arange(len(kept))
    reduced = replace(task, label_names=tuple(task.label_names[c] for c in kept))
    ins, outs = [], []
    for b in splits:
        out = np.isin(b.gold, held)
        a, o = b.subset(np.flatnonzero(~out)), b.subset(np.flatnonzero(out))
        a.label = np.where(a.label >= 0, new[np.clip(a.label, 0, None)], a.label)
        a.gold = np.where(a.gold >= 0, new[np.clip(a.gold, 0, None)], a.gold)
        o.label = np.where(o.label >= 0, OUT_OF_SCOPE, o.label)
        o.gold = np.full(len(o), OUT_OF_SCOPE, np.int64)
        ins.append(a)
        outs.append(o)
    return reduced, ins, outs, tuple(task.label_names[c] for c in held)


def mix_out_of_scope(
    stream: list[Batch], oos: Batch, per_class: int, n_held: int, cfg: StreamConfig, seed: int
) -> list[Batch]:
    """Spread ``per_class × n_held`` out-of-scope rows evenly over the stream's batches
    (seeded; labels hidden like the rest, for ``1 - label_fraction`` of them)."""
    rng = np.random.default_rng(seed + 6)
    take = rng.permutation(len(oos))[: per_class * n_held]
    where = np.resize(rng.permutation(len(stream)), len(take))
    out = []
    for b, batch in enumerate(stream):
        extra = oos.subset(take[where == b])
        if cfg.label_fraction < 1.0:
            extra.label = np.where(
                rng.random(len(extra)) >= cfg.label_fraction, NO_LABEL, extra.label
            )
        both = concat_batches([batch, extra], batch.name)
        out.append(both.subset(rng.permutation(len(both))))
    return out


def traffic_view(test: Batch, class_weights: np.ndarray, size: int | None, seed: int) -> Batch:
    """The test set resampled (seeded, with replacement) to the stream's class proportions."""
    rng = np.random.default_rng(seed + 2)
    size = size or len(test)
    p = class_weights.astype(float)
    has_test = np.bincount(test.gold, minlength=len(p)) > 0
    p = np.where(has_test, p, 0.0)
    if p.sum() == 0:
        raise DataError("the test set shares no class with the stream: check the data files")
    p /= p.sum()
    classes = rng.choice(len(p), size=size, p=p)
    by_class = {c: np.flatnonzero(test.gold == c) for c in np.unique(classes)}
    idx = np.array([rng.choice(by_class[c]) for c in classes], dtype=np.int64)
    return test.subset(idx, name="traffic")


@dataclass
class DataBundle:
    """Everything a continual run needs: the task, the splits, the stream and the groups."""

    task: Task
    pretrain: Batch
    pool: Batch
    test: Batch
    traffic: Batch
    stream: list[Batch]
    class_counts: np.ndarray
    groups: dict[int, Group]
    bounds: GroupBounds
    first_batch: dict[int, int]
    class_order: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)
    #: the test queries of classes held back from the task (``data.out_of_scope_classes``)
    out_of_scope: Batch | None = None

    def summary(self) -> dict[str, object]:
        sizes = {g: sum(1 for v in self.groups.values() if v == g) for g in GROUPS}
        return {
            "n_classes": self.task.n_classes,
            "pretrain": len(self.pretrain),
            "pool": len(self.pool),
            "test": len(self.test),
            "traffic": len(self.traffic),
            "batches": [len(b) for b in self.stream],
            "n_max": int(self.class_counts.max()),
            "group_bounds": {
                "many": self.bounds.many,
                "few": self.bounds.few,
                "scale": self.bounds.scale,
            },
            "group_sizes": sizes,
        }


def build_bundle(cfg: KCMConfig) -> DataBundle:
    """Load the dataset named in ``cfg.data`` and build pretrain split, long-tailed stream and
    the two test views."""
    data: DataConfig = cfg.data
    task, train, test = load_source(data, cfg.seed)
    oos_train = oos_test = None
    held: tuple[str, ...] = ()
    if data.out_of_scope_classes:
        task, (train, test), (oos_train, oos_test), held = hold_out_classes(
            task, [train, test], data.out_of_scope_classes, cfg.seed
        )
        oos_test.name = "out_of_scope"
    rest, pre = stratified_split(train.gold, data.pretrain_fraction, cfg.seed)
    pretrain = train.subset(pre, "pretrain")
    remaining = train.subset(rest, "remaining")
    keep, order = make_long_tailed(remaining.gold, task.n_classes, data.imbalance_factor, cfg.seed)
    pool = remaining.subset(keep, "pool")
    counts = np.bincount(pool.gold, minlength=task.n_classes)
    bounds = group_bounds(data.groups, int(counts.max()))
    groups = assign_groups(counts, bounds)
    stream, first = split_stream(pool, task.n_classes, data.stream, cfg.seed)
    if oos_train is not None:  # as many per held-back class as a typical class has
        per_class = int(np.median(counts[counts > 0]))
        stream = mix_out_of_scope(stream, oos_train, per_class, len(held), data.stream, cfg.seed)
    traffic = traffic_view(test, counts, cfg.eval.traffic_size, cfg.seed)
    return DataBundle(
        task=task,
        pretrain=pretrain,
        pool=pool,
        test=test,
        traffic=traffic,
        stream=stream,
        class_counts=counts,
        groups=groups,
        bounds=bounds,
        first_batch=first,
        class_order=order,
        meta={"dataset": data.dataset, "out_of_scope_classes": list(held)},
        out_of_scope=oos_test,
    )


# -- a bundle on disk (the DVC ``prepare`` stage's output) ------------------------------------
def save_bundle(bundle: DataBundle, folder: str | Path) -> Path:
    """Write the bundle as Parquet splits, the stream as inbox-ready CSV batches and one JSON
    file for the rest; ``load_bundle`` reads it back."""
    import json

    folder = Path(folder)
    (folder / "stream").mkdir(parents=True, exist_ok=True)
    task = bundle.task
    for name in ("pretrain", "pool", "test", "traffic", "out_of_scope"):
        if getattr(bundle, name) is not None:
            part = getattr(bundle, name).to_frame(task)
            part.to_parquet(folder / f"{name}.parquet", index=False)
    for i, b in enumerate(bundle.stream):
        b.to_frame(task).to_csv(folder / "stream" / f"batch-{i:03d}.csv", index=False)
    info = {
        "task": task.to_dict(),
        "class_counts": [int(n) for n in bundle.class_counts],
        "groups": {str(c): g for c, g in bundle.groups.items()},
        "bounds": {
            "many": bundle.bounds.many,
            "few": bundle.bounds.few,
            "scale": bundle.bounds.scale,
        },
        "first_batch": {str(c): int(b) for c, b in bundle.first_batch.items()},
        "class_order": [int(c) for c in bundle.class_order],
        "meta": bundle.meta,
        "summary": bundle.summary(),
    }
    (folder / "bundle.json").write_text(json.dumps(info, indent=1))
    return folder


def load_bundle(folder: str | Path) -> DataBundle:
    import json

    folder = Path(folder)
    if not (folder / "bundle.json").is_file():
        raise DataError(f"{folder} holds no prepared bundle (bundle.json): run `kcm stage prepare`")
    info = json.loads((folder / "bundle.json").read_text())
    task = Task.from_dict(info["task"])
    str_cols = (task.label_col, task.eval_col)

    def read(path: Path, name: str) -> Batch:
        return batch_from_frame(read_table(path, str_cols=str_cols), task, name)

    splits = {n: read(folder / f"{n}.parquet", n) for n in ("pretrain", "pool", "test", "traffic")}
    stream = [read(p, p.stem) for p in sorted((folder / "stream").glob("batch-*.csv"))]
    oos = folder / "out_of_scope.parquet"
    return DataBundle(
        out_of_scope=read(oos, "out_of_scope") if oos.is_file() else None,
        task=task,
        stream=stream,
        class_counts=np.asarray(info["class_counts"]),
        groups={int(c): g for c, g in info["groups"].items()},
        bounds=GroupBounds(**info["bounds"]),
        first_batch={int(c): b for c, b in info["first_batch"].items()},
        class_order=np.asarray(info["class_order"]),
        meta=info["meta"],
        **splits,
    )
