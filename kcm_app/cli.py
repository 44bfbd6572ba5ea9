"""The ``kcm`` command line. Heavy libraries load only inside the command that needs them.

An application of the library: it may import ``flows/`` (and so Prefect); ``kcm/`` never does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from kcm.env import apply_offline_env
from kcm.procs import stop_within
from kcm_app.bench_cmd import add_bench_parser
from kcm_app.common import add_config_args, load_cli_config, package_version
from kcm_app.registry_cmds import cmd_lineage, cmd_promote, cmd_rollback
from kcm_app.score_cmd import add_score_parser
from kcm_app.serve_model_cmd import add_serve_model_parser

#: exit statuses of the commands that run cycles (README, "When something fails")
EXIT = {
    "ok": 0,
    "cycle_failed": 1,  # a batch fault, counted; the batch is retried by the next run
    "error": 2,  # a usage or configuration error, or a busy workspace
    "endpoint_down": 3,  # the circuit opened: the small model answered in its place
    "environment": 4,  # disk, store, MLflow, DVC...: nothing counted, the batch waits
    "budget": 5,  # the spend cap is reached: calls refused (small model), batches may wait
}


INIT_HELP = "create the workspace if the folder holds none (default: refuse; see `kcm init`)"


def _flow_status(state: Any) -> int:
    """The exit status of a finished ``kcm-continual`` flow run."""
    if not state.is_failed():
        if state.name == "BudgetExhausted":
            sys.stderr.write(f"kcm: {state.message}\n")
            return EXIT["budget"]
        return EXIT["ok"]
    sys.stderr.write(f"kcm: error: {state.message}\n")
    named = {
        "EnvironmentFault": EXIT["environment"],
        "EndpointDown": EXIT["endpoint_down"],
        "NoWorkspace": EXIT["error"],
        "Refused": EXIT["error"],  # the registry refused (another project's model)
    }
    return named.get(state.name, EXIT["cycle_failed"])


def _prefect_home(workdir: Path) -> None:
    """A project-local Prefect home (its SQLite database and results), unless one is set."""
    os.environ.setdefault("PREFECT_HOME", str(workdir.resolve() / ".prefect"))


def _workdir_config(args: argparse.Namespace, cfg: Any, workdir: Path) -> Path:
    """Write the run's resolved config into the workspace (the flow reads it from there).
    On an existing workspace, run settings take effect on the next cycle; a setting frozen
    with its learned versions that differs is refused (one line naming the key)."""
    import yaml

    from kcm.config import config_to_dict
    from kcm.persist import check_built
    from kcm.workspace import Workspace, atomic_write_text

    workdir.mkdir(parents=True, exist_ok=True)
    ws = Workspace(workdir)
    if ws.exists():
        check_built(ws.system_dir(0), cfg, str(ws.root))
    path = workdir / "params.resolved.yaml"
    resolved = config_to_dict(cfg)
    resolved["flow"]["workdir"] = str(workdir.resolve())
    atomic_write_text(path, yaml.safe_dump(resolved, sort_keys=False))
    return path


def cmd_run(args: argparse.Namespace) -> int:
    import tempfile

    from rich.console import Console

    from kcm.config import load_config
    from kcm.evaluation.report import render_tables
    from kcm.steps import feed

    cfg = load_cli_config(args)
    out = Path(args.out).resolve()
    cfg_path = _workdir_config(args, cfg, out)
    cfg = load_config(cfg_path)
    with (
        stop_within(cfg.flow.stop_grace),
        tempfile.TemporaryDirectory(prefix="kcm-inbox-") as inbox,
    ):
        feed(cfg, inbox)
        if args.in_process:
            report = _run_in_process(cfg, out, inbox, show=not args.no_progress)
            status = EXIT["ok"]
        else:
            _prefect_home(out)
            from flows.continual import continual_flow

            state = continual_flow(  # `kcm run --out DIR` creates its workspace
                config_path=str(cfg_path), inbox=inbox, init=True, return_state=True
            )
            status = _flow_status(state)
            if status not in (EXIT["ok"], EXIT["endpoint_down"], EXIT["budget"]):
                return status
            report = json.loads((out / "state" / "report.json").read_text())
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    Console().print(render_tables(report))
    Console().print(f"report: {path}")
    return _run_status(report, announced=status == EXIT["budget"])


def _run_status(report: dict[str, Any], announced: bool = False) -> int:
    """3 when the circuit breaker stopped calling the large model on any batch of this run:
    answers were delivered (by the small model) but the endpoint is down, and a scheduler
    should say so (every batch of the run counts: a last batch with fewer hard samples than
    the breaker's bound never opens it, however down the endpoint is); 5 when the spend cap
    refused calls or left batches waiting."""
    run = report.get("run") or {}
    opened = run.get("circuit_open") or []
    if not opened and (run.get("budget_exhausted") or run.get("waiting")):
        if announced:  # the flow's final state already said it
            return EXIT["budget"]
        sys.stderr.write(
            f"kcm: the serving spend cap is reached: calls refused on "
            f"{', '.join(run.get('budget_exhausted') or []) or 'no batch'}; "
            f"{len(run.get('waiting') or [])} batch(es) wait for budget (large.budget)\n"
        )
        return EXIT["budget"]
    if opened:
        sys.stderr.write(
            f"kcm: the large-model endpoint failed repeatedly: the circuit opened on "
            f"{', '.join(opened)} and the small model answered instead (report.json: "
            "large_failures)\n"
        )
        return EXIT["endpoint_down"]
    return EXIT["ok"]


def _run_in_process(cfg: Any, out: Path, inbox: str, show: bool) -> dict[str, Any]:
    from kcm import loop
    from kcm.cycle import Runner
    from kcm.progress import CycleProgress
    from kcm.workspace import Workspace

    with CycleProgress(show) as bars:
        return loop.run(cfg, Workspace(out, inbox), Runner(progress=bars))


def cmd_feed(args: argparse.Namespace) -> int:
    from kcm.steps import feed

    cfg = load_cli_config(args)
    inbox = args.inbox or str(Path(cfg.flow.workdir) / cfg.flow.inbox)
    written = feed(cfg, inbox, args.batches)
    for w in written:
        sys.stdout.write(f"{w}\n")
    return 0


def _existing(args: argparse.Namespace, cfg: Any) -> Path:
    """The workspace folder of a run: it must hold a workspace, unless ``--init`` asks for a
    new one (a mistyped --workdir is one clear error, never a new empty project)."""
    from kcm.workspace import Workspace

    workdir = Path(args.workdir or cfg.flow.workdir).resolve()
    if not args.init:
        Workspace(workdir).require()
    return workdir


def cmd_init(args: argparse.Namespace) -> int:
    from kcm import loop
    from kcm.workspace import Workspace

    cfg = load_cli_config(args)
    workdir = Path(args.workdir or cfg.flow.workdir).resolve()
    made = loop.init(cfg, Workspace(workdir, cfg.flow.inbox))
    if not made["created"]:
        sys.stderr.write(f"kcm: {workdir} is already a workspace: left as it is\n")
    sys.stdout.write(json.dumps(made, indent=2, default=str) + "\n")
    return 0


def cmd_continual(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args)
    workdir = _existing(args, cfg)
    cfg_path = _workdir_config(args, cfg, workdir)
    _prefect_home(workdir)
    from flows.continual import continual_flow

    with stop_within(cfg.flow.stop_grace):
        state = continual_flow(
            config_path=str(cfg_path), inbox=args.inbox, init=args.init, return_state=True
        )
    status = _flow_status(state)
    if status in (EXIT["ok"], EXIT["budget"]):
        result = state.result(raise_on_failure=False)
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return status


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import serve

    cfg = load_cli_config(args)
    workdir = _existing(args, cfg)
    if args.init:  # created now: the deployment's runs require it
        from kcm import loop
        from kcm.workspace import Workspace

        loop.init(cfg, Workspace(workdir, cfg.flow.inbox))
    cfg_path = _workdir_config(args, cfg, workdir)
    return serve(cfg_path, workdir, inbox=args.inbox, cron=args.cron, interval=args.interval)


def cmd_stage(args: argparse.Namespace) -> int:
    from kcm.stages import run_stage

    cfg = load_cli_config(args)
    out = run_stage(args.name, cfg, args.dir)
    sys.stdout.write(json.dumps(out, indent=1, default=str) + "\n")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check a workspace (and with --repair restore what can be restored): 0 when nothing
    fatal is left, 4 otherwise."""
    from kcm import doctor
    from kcm.lock import exclusive
    from kcm.workspace import Workspace

    cfg = load_cli_config(args)
    ws = Workspace(Path(args.workdir or cfg.flow.workdir))
    with exclusive(ws.root, cfg.flow.lock_timeout):
        findings = doctor.repair(ws) if args.repair else doctor.check(ws)
    for f in findings:
        sys.stdout.write(f"{f}\n")
    if not findings:
        sys.stdout.write(f"{ws.root}: nothing to repair\n")
    fatal = any(f.level == "fatal" for f in findings)
    return EXIT["environment"] if fatal else EXIT["ok"]


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from kcm.config import config_to_dict

    cfg = load_cli_config(args)
    sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return 0


WHO_HELP = "recorded in the version's tags (default: your login)"


def _add_workdir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", help="the project folder (default: flow.workdir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcm",
        description="KAN-based large-small model collaboration with continual learning.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--version", action="version", version=f"kcm {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="feed the dataset's stream into a temporary inbox and run kcm-continual once"
    )
    add_config_args(run)
    run.add_argument(
        "--out", default="runs/latest", help="the workspace and report folder (default runs/latest)"
    )
    run.add_argument(
        "--in-process", action="store_true", help="run the same pipeline steps without Prefect"
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    run.set_defaults(func=cmd_run)

    fd = sub.add_parser("feed", help="write the dataset's stream batches into an inbox folder")
    add_config_args(fd)
    fd.add_argument("--inbox", help="folder or fsspec URL (default: flow.workdir/flow.inbox)")
    fd.add_argument("--batches", type=int, help="how many batches (default: all K)")
    fd.set_defaults(func=cmd_feed)

    ini = sub.add_parser("init", help="create a workspace (runs require an existing one)")
    add_config_args(ini)
    _add_workdir(ini)
    ini.set_defaults(func=cmd_init)

    co = sub.add_parser("continual", help="run the kcm-continual flow once on the inbox")
    add_config_args(co)
    _add_workdir(co)
    co.add_argument("--inbox", help="folder or fsspec URL (default: flow.inbox)")
    co.add_argument("--init", action="store_true", help=INIT_HELP)
    co.set_defaults(func=cmd_continual)

    se = sub.add_parser("serve", help="run kcm-continual on a schedule through Prefect")
    add_config_args(se)
    when = se.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a cron expression, e.g. '0 2 * * *'")
    when.add_argument(
        "--interval", type=float, help="seconds between runs (the first runs at start-up)"
    )
    _add_workdir(se)
    se.add_argument("--inbox", help="folder or fsspec URL (default: flow.inbox)")
    se.add_argument("--init", action="store_true", help=INIT_HELP)
    se.set_defaults(func=cmd_serve)

    add_score_parser(sub)
    add_serve_model_parser(sub)

    pr = sub.add_parser("promote", help="make a registered model version the champion")
    add_config_args(pr)
    pr.add_argument("--version", type=int, required=True, help="the registered model version")
    _add_workdir(pr)
    pr.add_argument("--who", help=WHO_HELP)
    pr.set_defaults(func=cmd_promote)

    rb = sub.add_parser("rollback", help="point champion back at the version it replaced")
    add_config_args(rb)
    _add_workdir(rb)
    rb.add_argument("--who", help=WHO_HELP)
    rb.set_defaults(func=cmd_rollback)

    li = sub.add_parser("lineage", help="the batches, code and config a model version came from")
    add_config_args(li)
    li.add_argument("--version", type=int, required=True, help="the registered model version")
    _add_workdir(li)
    li.add_argument("--json", action="store_true", help="print everything as JSON")
    li.set_defaults(func=cmd_lineage)

    dr = sub.add_parser(
        "doctor", help="check a workspace's ledger and stores; --repair restores what it can"
    )
    add_config_args(dr)
    _add_workdir(dr)
    dr.add_argument(
        "--repair",
        action="store_true",
        help="restore the newest good ledger backup, set damaged stores aside, remove temp files",
    )
    dr.set_defaults(func=cmd_doctor)

    st = sub.add_parser("stage", help="run one stage of the DVC pipeline (dvc.yaml calls these)")
    add_config_args(st)
    st.add_argument("name", choices=["prepare", "pretrain_large", "cycle", "evaluate"])
    st.add_argument("--dir", default="data/pipeline", help="the stages' folder (data/pipeline)")
    st.set_defaults(func=cmd_stage)

    add_bench_parser(sub)

    conf = sub.add_parser("config", help="print the resolved configuration as YAML")
    add_config_args(conf)
    conf.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_offline_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    uses_prefect = args.command in ("continual", "serve") or (
        args.command == "run" and not args.in_process
    )
    if uses_prefect:  # Prefect's own console format (time, run name); kcm logs join it
        os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "kcm")
        logging.getLogger("kcm").setLevel(level)
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from kcm.errors import EnvironmentFault, KCMError

    try:
        return int(args.func(args) or 0)
    except EnvironmentFault as err:
        sys.stderr.write(f"kcm: error: {err}\n")
        return EXIT["environment"]
    except KCMError as err:
        sys.stderr.write(f"kcm: error: {err}\n")
        return EXIT["error"]


if __name__ == "__main__":
    raise SystemExit(main())
