"""Scoring a big table: ``kcm score`` in one process against a local Dask cluster (and Spark).

    python benchmarks/score_scale.py [--workdir PROJECT] [--rows 1000000] [--workers 2]
                                     [--spark] [--out DIR]

Without ``--workdir`` a digits project is built first in a temporary folder (``kcm run
--in-process``, 3 batches, registry on). A table of ``--rows`` digits rows (drawn with
replacement from scikit-learn's digits, with an ``id``) is written as Parquet; it is scored
with ``--engine local`` (one process, torch on every core), then ``--engine dask --workers N``
(a local cluster of N worker processes, one thread each), then with ``--spark`` on
``local[N]``. Each engine writes to a folder of its own; the answers are compared row for row
with the local engine's. The first run pays for the large model's answers; the engines after
it find them in the workspace's answer store, so the local engine is run twice and its second
(warm) run is the baseline. Rows/s include starting the cluster and loading the system.

Writes ``score_scale.json`` and ``score_scale.md`` into ``--out`` (default ``runs/score-scale``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def _kcm(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "kcm_app.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"kcm {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _table(path: Path, rows: int) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(0).integers(0, len(d.data), rows)
    frame = pd.DataFrame(d.data[idx], columns=[f"px{i}" for i in range(64)])
    frame.insert(0, "id", np.arange(rows))
    frame.to_parquet(path, index=False, row_group_size=50_000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", help="a project with a champion (default: build a digits one)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--spark", action="store_true", help="also score on Spark (kcm[spark])")
    ap.add_argument("--out", default="runs/score-scale")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="kcm-score-"))
    ws = Path(args.workdir).resolve() if args.workdir else tmp / "ws"
    if not args.workdir:
        print("building a digits project ...", flush=True)
        _kcm(
            "run",
            "--in-process",
            "--no-progress",
            "--out",
            str(ws),
            "--set",
            "data.stream.n_batches=3",
            "--set",
            "eval.plots=false",
        )
    table = tmp / "table.parquet"
    print(f"writing {args.rows:,} rows ...", flush=True)
    _table(table, args.rows)
    runs: dict[str, Any] = {}
    plan = [
        ("local (cold)", ["--engine", "local"]),
        ("local", ["--engine", "local"]),
        (f"dask x{args.workers}", ["--engine", "dask", "--workers", str(args.workers)]),
    ]
    if args.spark:
        plan.append(
            (f"spark local[{args.workers}]", ["--engine", "spark", "--workers", str(args.workers)])
        )
    for name, extra in plan:
        folder = tmp / name.replace(" ", "-").replace("(", "").replace(")", "").replace(
            "[", ""
        ).replace("]", "")
        print(f"scoring on {name} ...", flush=True)
        t0 = time.perf_counter()
        summary = json.loads(
            _kcm(
                "score",
                "--workdir",
                str(ws),
                "--input",
                str(table),
                "--out",
                str(folder),
                "--keep",
                "id",
                *extra,
            )
        )
        wall = time.perf_counter() - t0
        runs[name] = {
            **summary,
            "wall_s": round(wall, 2),
            "rows_per_s_wall": round(args.rows / wall, 1),
            "folder": str(folder),
        }
        print(f"  {runs[name]['rows_per_s_wall']:,.0f} rows/s ({wall:.1f} s)", flush=True)
    base = pd.read_parquet(runs["local"]["folder"])
    for name, r in runs.items():
        other = pd.read_parquet(r["folder"] if "spark" not in name else Path(r["folder"]) / "parts")
        other = other.sort_values("id").reset_index(drop=True)
        r["same_answers"] = bool(
            (other["answer"].to_numpy() == base["answer"].to_numpy()).all()
            and (other["answered_by"].to_numpy() == base["answered_by"].to_numpy()).all()
        )
    speed = runs[f"dask x{args.workers}"]["rows_per_s_wall"] / runs["local"]["rows_per_s_wall"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "rows": args.rows,
        "workers": args.workers,
        "dask_speedup_vs_one_process": round(speed, 2),
        "runs": {k: {kk: v for kk, v in r.items() if kk != "folder"} for k, r in runs.items()},
    }
    (out / "score_scale.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# kcm score on {args.rows:,} digits rows ({result['machine']})",
        "",
        "| engine | wall s | rows/s | large requests | from store | same answers |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        lines.append(
            f"| {name} | {r['wall_s']} | {r['rows_per_s_wall']:,.0f} | {r['large_requests']} | {r['answers_from_store']} | {r['same_answers']} |"
        )
    lines += ["", f"Dask with {args.workers} workers: **{speed:.2f}×** one process (warm)."]
    (out / "score_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
