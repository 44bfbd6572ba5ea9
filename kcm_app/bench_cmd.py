"""``kcm bench``: its arguments and the command (the held-out or the OCaTS scenario)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kcm_app.common import add_config_args, load_cli_config


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from kcm.bench import RUNS, check_budget, check_jobs, check_methods, run_bench, run_ocats

    check_budget(args.budget)
    check_jobs(args.jobs)
    methods = [m for m in (args.methods or "").split(",") if m]
    cfg = load_cli_config(args)
    if args.scenario == "ocats":
        from kcm.bench.scenario_ocats import methods_of

        chosen = methods_of(methods)
    else:
        chosen = check_methods(methods)
    # one step per continual run (or system) and scoring, one per peer operating point
    from kcm.bench.scenario_ocats import SYSTEMS
    from kcm.peers import PEERS

    runs = [m for m in chosen if m in (SYSTEMS if args.scenario == "ocats" else RUNS)]
    points = sum(len(PEERS[m].sweep) for m in chosen if m in PEERS)
    if args.scenario == "ocats" and "cascade" in chosen:
        from kcm.bench.scenario_ocats import CASCADE_EPSILONS

        points += len(CASCADE_EPSILONS)
    if args.scenario == "ocats" and "kcm_swept" in chosen:
        from kcm.bench.scenario_ocats import KCM_EPSILONS

        points += len(KCM_EPSILONS)
    # seeds side by side report when each finishes; one after the other, every step
    total = len(args.seeds) if args.jobs > 1 else len(args.seeds) * (len(set(runs)) + 1 + points)
    with Progress(
        TextColumn("[bold]kcm bench[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=args.no_progress,
    ) as bar:
        job = bar.add_task("", total=total)
        state = {"n": 0}

        def step(what: str) -> None:
            bar.update(job, completed=state["n"], description=what)
            state["n"] += 1

        if args.scenario == "ocats":
            run_ocats(
                cfg,
                args.seeds,
                args.out,
                data_dir=args.data_dir,
                methods=chosen,
                limit=args.stream_limit,
                progress=step,
                jobs=args.jobs,
                batch_size=args.stream_batch,
            )
        else:
            run_bench(
                cfg,
                args.seeds,
                args.out,
                throughput_n=args.throughput_n,
                progress=step,
                keep_runs=args.keep_runs,
                budget=args.budget,
                methods=chosen,
                jobs=args.jobs,
            )
        bar.update(job, completed=total, description="done")
    sys.stdout.write((Path(args.out) / "BENCH.md").read_text())
    sys.stdout.write(f"\n{Path(args.out) / 'bench.json'}\n")
    return 0


def add_bench_parser(sub: Any) -> None:
    be = sub.add_parser("bench", help="every method on the same stream, for each seed")
    add_config_args(be)
    be.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default 0 1 2")
    be.add_argument("--out", default="runs/bench", help="where bench.json and BENCH.md go")
    be.add_argument(
        "--throughput-n", type=int, default=1000, help="traffic samples timed per method"
    )
    be.add_argument(
        "--budget",
        type=float,
        default=0.3,
        help="large-call rate at which every router is also scored (default 0.3)",
    )
    be.add_argument(
        "--scenario",
        choices=["heldout", "ocats"],
        default="heldout",
        help="heldout: the configured long-tailed stream with held-out views (default); "
        "ocats: BANKING77's test queries as the stream with GPT-4 replayed (--data-dir: "
        "the folder with test_answers.csv, default ../shared/data/banking77-llm)",
    )
    be.add_argument(
        "--methods",
        default=None,
        help="a comma-separated subset, e.g. kcm,mcm,ocats (kcm always runs)",
    )
    be.add_argument(
        "--stream-limit",
        type=int,
        default=None,
        help="ocats: only the first N queries of each shuffled stream (a quick check)",
    )
    be.add_argument(
        "--stream-batch",
        type=int,
        default=100,
        help="ocats: queries answered before each learning step (default 100; OCaTS learns "
        "after every answer, kcm after every batch)",
    )
    be.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="seeds run side by side in this many processes, the cores shared out among "
        "them (default 1; throughput figures are then measured on shared cores)",
    )
    be.add_argument("--keep-runs", action="store_true", help="keep the runs' workspaces")
    be.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    be.set_defaults(func=cmd_bench)
