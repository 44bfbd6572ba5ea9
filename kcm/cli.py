"""The ``kcm`` command line. Heavy libraries load only inside the command that needs them."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _data_overrides(args: argparse.Namespace) -> list[str]:
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
    return load_config(path, [*_data_overrides(args), *(args.set or [])])


def _add_config_args(p: argparse.ArgumentParser) -> None:
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
    d.add_argument("--dataset", choices=["digits", "banking77", "csv"], help="which dataset")
    d.add_argument("--data-dir", help="banking77: the folder with train.csv and test.csv")
    d.add_argument("--train", help="csv: the training file (CSV or Parquet)")
    d.add_argument("--test", help="csv: the test file (default: a seeded stratified split)")
    d.add_argument("--text-col", help="csv: the text column")
    d.add_argument("--feature-cols", help="csv: comma-separated numeric feature columns")
    d.add_argument("--label-col", help="csv: the label column")
    p.add_argument("--judge", choices=["kan", "mlp"], help="kan = KCM, mlp = MCM (judge.kind)")


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kcm.evaluation.report import render_tables
    from kcm.runner import run_continual

    cfg = load_cli_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_continual(cfg, show_progress=not args.no_progress, out_dir=out)
    path = out / "report.json"
    path.write_text(json.dumps(result.report, indent=2, default=float))
    console = Console()
    console.print(render_tables(result.report))
    console.print(f"report: {path}  (wall time {result.report['wall_seconds']:.0f}s)")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from kcm.config import config_to_dict

    cfg = load_cli_config(args)
    sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcm",
        description="KAN-based large-small model collaboration with continual learning.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the continual loop in-process and write report.json")
    _add_config_args(run)
    run.add_argument("--out", default="runs/latest", help="output folder (default runs/latest)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    run.set_defaults(func=cmd_run)

    conf = sub.add_parser("config", help="print the resolved configuration as YAML")
    _add_config_args(conf)
    conf.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from kcm.errors import KCMError

    try:
        return int(args.func(args) or 0)
    except KCMError as err:
        sys.stderr.write(f"kcm: error: {err}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
