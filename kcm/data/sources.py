"""Raw datasets: scikit-learn's digits, BANKING77 (CSV layout), and users' own CSV/Parquet.

Each loader returns ``(task, train, test)`` batches with every label visible; the
long-tail construction and the stream live in ``kcm.data.stream``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kcm.config import DataConfig
from kcm.data.batch import Batch, Task, batch_from_frame
from kcm.errors import DataError

DEFAULT_BANKING77_DIRS = ("../shared/data/banking77", "data/banking77")


def read_table(path: str | Path, str_cols: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV or Parquet file (chosen by suffix), with errors that name the fix.

    ``str_cols`` are read as strings (labels such as "7" stay "7", not 7.0).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist: check the path (--train/--test)")
    try:
        if p.suffix.lower() in {".parquet", ".pq"}:
            df = pd.read_parquet(p)
            for c in str_cols:
                if c in df.columns:
                    df[c] = df[c].where(df[c].isna(), df[c].astype(str))
            return df
        return pd.read_csv(p, dtype=dict.fromkeys(str_cols, str) or None)
    except pd.errors.EmptyDataError:
        raise DataError(f"{p} is empty: give a file with a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        raise DataError(f"{p} could not be read as CSV/Parquet ({err}): check the file") from None


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, part) with ``fraction`` of every class in ``part``."""
    rng = np.random.default_rng(seed)
    part: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = round(len(idx) * fraction)
        if len(idx) > 1:
            n = min(max(n, 1), len(idx) - 1)
        part.append(idx[:n])
    chosen = np.sort(np.concatenate(part)) if part else np.array([], dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(y)), chosen)
    return rest, chosen


def load_digits_task(cfg: DataConfig, seed: int) -> tuple[Task, Batch, Batch]:
    from sklearn.datasets import load_digits

    d = load_digits()
    cols = tuple(f"px{i}" for i in range(d.data.shape[1]))
    task = Task(
        kind="numeric",
        label_names=tuple(str(i) for i in range(10)),
        feature_cols=cols,
        label_col="label",
    )
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    ids = np.array([f"digit-{i:04d}" for i in range(len(y))], dtype=object)
    full = Batch(ids=ids, inputs=x, label=y, gold=y.copy(), name="digits")
    train_idx, test_idx = stratified_split(y, cfg.test_fraction, seed)
    return task, full.subset(train_idx, "train"), full.subset(test_idx, "test")


def resolve_banking77_dir(data_dir: str | None) -> Path:
    candidates = [data_dir] if data_dir else list(DEFAULT_BANKING77_DIRS)
    for cand in candidates:
        p = Path(cand).expanduser()
        if (p / "train.csv").is_file() and (p / "test.csv").is_file():
            return p
    tried = ", ".join(str(Path(c).expanduser()) for c in candidates)
    raise DataError(
        f"BANKING77 not found (looked for train.csv and test.csv in: {tried}): "
        f"pass --data-dir PATH to the folder that holds them"
    )


def load_banking77_task(cfg: DataConfig, seed: int = 0) -> tuple[Task, Batch, Batch]:
    root = resolve_banking77_dir(cfg.data_dir)
    train_df, test_df = read_table(root / "train.csv"), read_table(root / "test.csv")
    for name, df in (("train.csv", train_df), ("test.csv", test_df)):
        missing = {"text", "category"} - set(df.columns)
        if missing:
            raise DataError(
                f"{root / name} lacks column(s) {sorted(missing)}: BANKING77 files have "
                f"'text,category'; for other layouts use --dataset csv"
            )
    labels = tuple(sorted(train_df["category"].astype(str).unique()))
    task = Task(kind="text", label_names=labels, text_col="text", label_col="category")
    for df, prefix in ((train_df, "b77-train"), (test_df, "b77-test")):
        df.insert(0, "id", [f"{prefix}-{i:05d}" for i in range(len(df))])
    train = batch_from_frame(train_df, task, "train", allow_unlabeled=False)
    test = batch_from_frame(test_df, task, "test", allow_unlabeled=False)
    return task, train, test


def load_csv_task(cfg: DataConfig, seed: int) -> tuple[Task, Batch, Batch]:
    if not cfg.train:
        raise DataError("--dataset csv needs --train PATH (a CSV or Parquet file)")
    if bool(cfg.text_col) == bool(cfg.feature_cols):
        raise DataError(
            "--dataset csv needs exactly one of --text-col NAME or --feature-cols A,B,..."
        )
    train_df = read_table(cfg.train)
    test_df = read_table(cfg.test) if cfg.test else None
    for df, path in ((train_df, cfg.train), (test_df, cfg.test)):
        if df is None:
            continue
        needed = [
            cfg.label_col,
            *([cfg.text_col] if cfg.text_col else list(cfg.feature_cols or [])),
        ]
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise DataError(
                f"{path} has no column(s) {missing} (columns: {list(df.columns)}): "
                f"pass --label-col/--text-col/--feature-cols naming existing columns"
            )
    labeled = train_df[cfg.label_col].notna()
    if not labeled.all():
        raise DataError(
            f"{cfg.train}: {int((~labeled).sum())} row(s) have no '{cfg.label_col}': "
            f"the training file needs a label on every row"
        )
    labels = tuple(sorted(train_df[cfg.label_col].astype(str).unique()))
    if len(labels) < 2:
        raise DataError(
            f"{cfg.train}: column '{cfg.label_col}' has {len(labels)} class(es); need 2+"
        )
    task = Task(
        kind="text" if cfg.text_col else "numeric",
        label_names=labels,
        text_col=cfg.text_col,
        feature_cols=tuple(cfg.feature_cols) if cfg.feature_cols else None,
        label_col=cfg.label_col,
        id_col="id",
    )
    if "id" not in train_df.columns:
        train_df = train_df.assign(id=[f"train-{i:06d}" for i in range(len(train_df))])
    train = batch_from_frame(train_df, task, "train", allow_unlabeled=False)
    if test_df is None:
        rest, held = stratified_split(train.label, cfg.test_fraction, seed)
        return task, train.subset(rest, "train"), train.subset(held, "test")
    if "id" not in test_df.columns:
        test_df = test_df.assign(id=[f"test-{i:06d}" for i in range(len(test_df))])
    return task, train, batch_from_frame(test_df, task, "test", allow_unlabeled=False)


def load_source(cfg: DataConfig, seed: int) -> tuple[Task, Batch, Batch]:
    """The task, train and test split of the dataset ``data.dataset`` names (its loader is
    the ``kcm.registry.DATASETS`` row)."""
    from kcm import registry

    loader = registry.load("data.dataset", cfg.dataset)
    task, train, test = loader(cfg, seed)
    return task, train, test
