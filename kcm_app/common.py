"""What the commands of the ``kcm`` command line share: the configuration flags and how
they resolve (``--config``, ``--set``, the data flags)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kcm import registry


def data_overrides(args: argparse.Namespace) -> list[str]:
    """Turn the data flags into config overrides (``--set`` wins over them)."""
    out: list[str] = []
    mapping = {
        "dataset": "data.dataset",
        "data_dir": "data.data_dir",
        "train": "data.train",
        "test": "data.test",
        "text_col": "data.text_col",
        "label_col": "data.label_col",
        "judge": "judge.kind",
        "features": "features.kind",
    }
    for attr, key in mapping.items():
        val = getattr(args, attr, None)
        if val is not None:
            out.append(f"{key}={json.dumps(val)}")
    if getattr(args, "feature_cols", None):
        cols = [c.strip() for c in args.feature_cols.split(",") if c.strip()]
        out.append(f"data.feature_cols={json.dumps(cols)}")
    if getattr(args, "seed", None) is not None:
        out.append(f"seed={args.seed}")
    return out


def load_cli_config(args: argparse.Namespace) -> Any:
    from kcm.config import load_config

    path = args.config
    if path is None and Path("params.yaml").is_file():
        path = "params.yaml"
    return load_config(path, [*data_overrides(args), *(args.set or [])])


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument(
        "--config", help="a params.yaml (default: ./params.yaml if present, else built-in defaults)"
    )
    g.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set routing.epsilon=0.95 (repeatable)",
    )
    g.add_argument("--seed", type=int, help="random seed (config key: seed)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=list(registry.DATASETS), help="which dataset")
    d.add_argument("--data-dir", help="banking77: the folder with train.csv and test.csv")
    d.add_argument("--train", help="csv: the training file (CSV or Parquet)")
    d.add_argument("--test", help="csv: the test file (default: a seeded stratified split)")
    d.add_argument("--text-col", help="csv: the text column")
    d.add_argument("--feature-cols", help="csv: comma-separated numeric feature columns")
    d.add_argument("--label-col", help="csv: the label column")
    p.add_argument(
        "--judge",
        choices=list(registry.JUDGES),
        help="kan = KCM, mlp = MCM, logreg = a router on the small model's confidence (judge.kind)",
    )
    p.add_argument(
        "--features",
        choices=["auto", "tfidf", "encoder"],
        help="text features of the small model and the judge (features.kind): encoder = "
        "sentence embeddings, tfidf = n-gram TF-IDF; auto = encoder with an LLM backend",
    )


def package_version() -> str:
    """The installed distribution's version (the source tree's pyproject.toml otherwise)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kcm")
    except PackageNotFoundError:
        import re

        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
        found = re.search(r'^version = "([^"]+)"', text, re.M)
        return found.group(1) if found else "unknown"
