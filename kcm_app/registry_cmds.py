"""The registry commands: ``kcm promote``, ``kcm rollback`` and ``kcm lineage``. They act on
the workspace named by ``--workdir`` (refused when it holds no project) and its own settings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kcm_app.common import load_cli_config


def _registry_context(args: argparse.Namespace) -> tuple[Any, Any]:
    """The config and workspace a registry command acts on: the workspace's own resolved
    config when it has one (``kcm run --out DIR`` / ``kcm continual`` write it)."""
    from kcm.config import load_config
    from kcm.workspace import Workspace

    workdir = Path(args.workdir) if args.workdir else None
    resolved = workdir / "params.resolved.yaml" if workdir else None
    if args.config is None and resolved is not None and resolved.is_file():
        cfg = load_config(resolved, args.set or [])
    else:
        cfg = load_cli_config(args)
    return cfg, Workspace(workdir or cfg.flow.workdir)


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def cmd_promote(args: argparse.Namespace) -> int:
    from kcm import steps

    cfg, ws = _registry_context(args)
    out = steps.promote(cfg, ws, args.version, who=args.who or _who())
    sys.stdout.write(
        f"{out['model']}: champion -> version {out['champion']} (was {out['previous']})\n"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from kcm import steps

    cfg, ws = _registry_context(args)
    out = steps.rollback(cfg, ws, who=args.who or _who())
    sys.stdout.write(
        f"{out['model']}: champion -> version {out['champion']} (rolled back from "
        f"{out['previous']})\n"
    )
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from kcm import steps

    cfg, ws = _registry_context(args)
    info = steps.lineage(cfg, ws, args.version)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    w = sys.stdout.write
    aliases = ", ".join(info["aliases"]) or "no alias"
    w(f"{info['model']} version {info['version']} ({aliases}); MLflow run {info['run_id']}\n")
    w(f"code commit: {info['git_commit']}\n")
    w(f"batches seen ({len(info['batches'])}):\n")
    for b in info["batches"]:
        w(f"  {b['name']}  sha256 {b['sha256'][:12]}  dvc md5 {b.get('dvc_md5') or '-'}\n")
    if info["gate"]:
        w(f"gate: {info['gate']}\n")
    for k, v in info["manual"].items():
        w(f"{k}: {v}\n")
    cfg_keys = ("data.dataset", "judge.kind", "routing.epsilon", "large.backend", "seed")
    w("config: " + ", ".join(f"{k}={info['config'].get(k)}" for k in cfg_keys) + "\n")
    w(f"  (all {len(info['config'])} keys with --json)\n")
    return 0
