"""``kcm score``: a table answered by a workspace's champion, on an engine (local, dask, spark)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kcm import registry
from kcm_app.common import add_config_args, load_cli_config


def cmd_score(args: argparse.Namespace) -> int:
    from kcm.steps.score import score
    from kcm.workspace import Workspace

    cfg = load_cli_config(args)
    workdir = Path(args.workdir or cfg.flow.workdir).resolve()
    keep = tuple(c.strip() for c in (args.keep or "").split(",") if c.strip())
    summary = score(
        cfg,
        Workspace(workdir, cfg.flow.inbox),
        args.input,
        args.out,
        engine=args.engine,
        address=args.address,
        workers=args.workers,
        keep=keep,
        fmt=args.format,
        partition_rows=args.partition_rows,
    )
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


def add_score_parser(sub: Any) -> None:
    sc = sub.add_parser(
        "score",
        help="answer a table (CSV/Parquet, a path or fsspec URL) with the champion, on an engine",
    )
    add_config_args(sc)
    sc.add_argument("--workdir", help="the project folder (default: flow.workdir)")
    sc.add_argument("--input", required=True, help="the table: a CSV or Parquet path or URL")
    sc.add_argument("--out", required=True, help="the answers' folder (parts), a path or URL")
    sc.add_argument("--engine", default="local", choices=sorted(registry.ENGINES))
    sc.add_argument("--address", help="dask: a scheduler (tcp://...); spark: a master URL")
    sc.add_argument(
        "--workers", type=int, help="local dask / spark: worker processes (default: the cores)"
    )
    sc.add_argument("--keep", help="input columns written beside the answers, e.g. id,text")
    sc.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    sc.add_argument(
        "--partition-rows", type=int, default=50_000, help="rows per partition (default 50000)"
    )
    sc.set_defaults(func=cmd_score)
