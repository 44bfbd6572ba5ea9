"""A project's names on shared servers (one MLflow tracking server and one Prefect API for
many projects): its project name, its registered model's name and its MLflow experiment.

- project: ``project`` in params.yaml, else the name the workspace was created with (the
  ledger's ``project``: its folder's name then), else its folder's name;
- registered model: ``registry.model_name``, else the name its first version was registered
  under (the ledger's ``model_name``), else ``<project>-<task>``;
- experiment: ``registry.experiment``, else ``kcm-<project>`` (``kcm`` for a workspace created
  before projects had names, so its runs stay where they were).

A moved workspace keeps its names (they are in its ledger); a copy gets names of its own
(``Workspace.claim_identity``), so it never registers into the original's model.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """Lower-case letters, digits and dashes (what Prefect artifact keys and tags accept)."""
    return _NOT_SLUG.sub("-", text.lower()).strip("-") or "kcm"


def _ledger(ws: Any) -> Any:
    return ws.load_ledger() if ws.exists() else None


def task_name(cfg: Any) -> str:
    """The task part of a model name: the dataset, or a csv task's training file's stem."""
    data = cfg.data
    if data.dataset == "csv" and data.train:
        return slug(PurePosixPath(str(data.train).split("?")[0]).stem)
    return slug(str(data.dataset))


def project_name(cfg: Any, ws: Any, ledger: Any = None) -> str:
    if cfg.project:
        return str(cfg.project)
    ledger = ledger if ledger is not None else _ledger(ws)
    if ledger is not None and ledger.project:
        return str(ledger.project)
    return slug(ws.root.name)


def model_name(cfg: Any, ws: Any, ledger: Any = None) -> str:
    if cfg.registry.model_name:
        return str(cfg.registry.model_name)
    ledger = ledger if ledger is not None else _ledger(ws)
    if ledger is not None and ledger.model_name:
        return str(ledger.model_name)
    return f"{project_name(cfg, ws, ledger)}-{task_name(cfg)}"


def experiment_name(cfg: Any, ws: Any, ledger: Any = None) -> str:
    if cfg.registry.experiment:
        return str(cfg.registry.experiment)
    ledger = ledger if ledger is not None else _ledger(ws)
    if ledger is not None and ledger.project is None and not cfg.project:
        return "kcm"  # created before projects had names: its runs stay in `kcm`
    return f"kcm-{project_name(cfg, ws, ledger)}"


def names(cfg: Any, ws: Any) -> dict[str, str]:
    """The project's names, as tags and labels show them."""
    ledger = _ledger(ws)  # read once for the three
    return {
        "project": project_name(cfg, ws, ledger),
        "model": model_name(cfg, ws, ledger),
        "experiment": experiment_name(cfg, ws, ledger),
    }
