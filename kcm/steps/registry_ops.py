"""Registry operations by hand (promote, roll back, lineage) and the one rule that keeps the
ledger and MLflow agreeing: with the registry on, MLflow's ``champion`` alias is the authority
(a person may move it in the MLflow UI); ``sync_champion`` copies it into the ledger at the
start of every run and after every command."""

from __future__ import annotations

import logging
from typing import Any

from kcm.config import KCMConfig
from kcm.errors import KCMError, RegistryError
from kcm.project import experiment_name, model_name, project_name, task_name
from kcm.workspace import Workspace

log = logging.getLogger(__name__)


def _registry(cfg: KCMConfig, ws: Workspace) -> Any:
    if not ws.exists():
        raise KCMError(
            f"{ws.root} holds no kcm project (no state/ledger.json): pass the --workdir of a "
            "project that `kcm run` or `kcm continual` created"
        )
    if not cfg.registry.enabled:
        raise KCMError("the registry is off (registry.enabled: false): nothing to promote")
    ws.claim_identity()  # a copy never moves the original's aliases
    from kcm.adapters import mlflow_registry

    mlflow_registry.setup(ws.root, experiment_name(cfg, ws), cfg.registry.tracking_uri)
    return mlflow_registry


def committed_versions(ws: Workspace, name: str) -> dict[int, dict[str, Any]]:
    """Version of registered model ``name`` -> the committed cycle of this workspace that
    produced it."""
    out = {}
    for c in ws.load_ledger().cycles:
        ml = c.get("mlflow") or {}
        if ml.get("model_version") is not None and ml.get("model_name", name) == name:
            out[int(ml["model_version"])] = c
    return out


def check_owner(cfg: KCMConfig, ws: Workspace, reg: Any, name: str) -> None:
    """Refuse (one line naming both) a registered model that holds versions another
    workspace registered, or that kcm did not register: this project never registers into
    it nor moves its aliases. Versions of this workspace's folder registered before
    workspaces had ids count as its own."""
    me = ws.load_ledger().workspace_id
    foreign = {
        v: (wid, path)
        for v, (wid, path) in reg.owners(name).items()
        if not (wid == me or (wid is None and path == str(ws.root)))
    }
    if not foreign:
        return
    versions = sorted(foreign)
    wid, path = foreign[versions[-1]]
    other = f"workspace {wid[:8]} at {path}" if wid else "not registered by kcm"
    default = f"{project_name(cfg, ws)}-{task_name(cfg)}"
    if not cfg.registry.model_name and ws.load_ledger().model_name == name:
        hint = f"this workspace registered as {name} before: `registry.model_name` names another"
    elif default == name:
        hint = f"its default, {default}, is that name: two projects share a folder name"
    else:
        hint = f"its default would be {default}"
    raise RegistryError(
        f"registered model {name!r} holds versions of another project (version(s) "
        f"{', '.join(map(str, versions[:5]))}{' ...' if len(versions) > 5 else ''}: {other}); "
        f"this project ({ws.root}, workspace {me[:8]}) neither registers into it nor moves its "
        f"aliases: give it a name of its own with `project` or `registry.model_name` in its "
        f"params.yaml ({hint})"
    )


def _belongs(reg: Any, info: dict[str, Any], ws: Workspace, workspace_id: str) -> bool:
    """A registered version that a committed cycle of this workspace produced: tagged with
    its id (or, registered before ids existed, by a run of this workspace's folder), and
    named by the ledger (a version registered by a cycle that crashed before its commit is
    not: it is refused, never promoted)."""
    if info["system_version"] is None:
        return False  # half-registered (no committed cycle tagged it)
    if info["version"] not in committed_versions(ws, info["model"]):
        return False
    tagged = info["tags"].get("kcm.workspace_id")
    if tagged is not None:
        return bool(tagged == workspace_id)
    return bool(reg.run_tags(info["run_id"]).get("kcm.workspace") == str(ws.root))


def _finish_last_commit(cfg: KCMConfig, ws: Workspace, reg: Any) -> None:
    """A run killed between the ledger commit and the alias move: move them now. (Every
    committed version becomes the challenger, so a challenger alias that does not name the
    last committed version is exactly that case; a person's promote never moves it.)"""
    name = model_name(cfg, ws)
    cycles = committed_versions(ws, name)
    if not cycles:
        return
    mv = max(cycles)
    last = cycles[mv]
    if reg.alias_version(name, reg.CHALLENGER) == mv:
        return
    from kcm.evaluation.gate import Decision

    gate = last.get("gate") or {}
    decision = Decision(bool(gate.get("promote")), list(gate.get("reasons") or []))
    log.warning(
        "model %s version %d: committed but its aliases were not moved; moving them", name, mv
    )
    reg.set_aliases(name, mv, decision)


def sync_champion(cfg: KCMConfig, ws: Workspace) -> int | None:
    """Make the ledger's champion the system version MLflow's ``champion`` alias names.
    Returns the champion's system version (the ledger's alone with the registry off)."""
    ledger = ws.load_ledger()
    if not cfg.registry.enabled or not ws.exists():
        return ledger.champion
    reg = _registry(cfg, ws)
    name = model_name(cfg, ws)
    check_owner(cfg, ws, reg, name)
    _finish_last_commit(cfg, ws, reg)
    version = reg.champion_version(name)
    if version is None:
        return ledger.champion
    info = reg.version_info(name, version)
    if not _belongs(reg, info, ws, ledger.workspace_id):
        log.info("MLflow's champion (version %s) belongs to another workspace: kept", version)
        return ledger.champion
    system_version = info["system_version"]
    if system_version is not None and system_version != ledger.champion:
        if not ws.system_dir(system_version).is_dir():
            raise KCMError(
                f"MLflow's champion (model version {version}) is system v{system_version:04d}, "
                f"which {ws.root} does not hold: point the alias at a version of this project"
            )
        log.info(
            "champion from MLflow: system v%04d (the ledger said %s)",
            system_version,
            ledger.champion,
        )
        ledger.champion = system_version
        ws.save_ledger(ledger)
    return system_version


def promote(cfg: KCMConfig, ws: Workspace, version: int, who: str) -> dict[str, Any]:
    """Make registered model ``version`` the champion by hand (recorded as version tags);
    the workspace serves the system it holds from the next cycle on."""
    reg = _registry(cfg, ws)
    name = model_name(cfg, ws)
    check_owner(cfg, ws, reg, name)
    info = reg.version_info(name, version)
    if not _belongs(reg, info, ws, ws.load_ledger().workspace_id):
        raise KCMError(
            f"model {name} version {version} was not registered by a committed cycle of "
            f"{ws.root}: promote one of this project's versions (see `kcm lineage`)"
        )
    previous = reg.promote(name, version, who)
    sync_champion(cfg, ws)
    log.info("model %s: champion is now version %s (was %s)", name, version, previous)
    return {"model": name, "champion": version, "previous": previous, **info}


def rollback(cfg: KCMConfig, ws: Workspace, who: str) -> dict[str, Any]:
    """Point the champion back at the version the current champion replaced."""
    reg = _registry(cfg, ws)
    name = model_name(cfg, ws)
    check_owner(cfg, ws, reg, name)
    was = reg.champion_version(name)
    target = reg.version_info(name, reg.rollback_target(name))
    if not _belongs(reg, target, ws, ws.load_ledger().workspace_id):
        raise KCMError(
            f"model {name} version {target['version']} (what the champion replaced) was not "
            f"registered by a committed cycle of {ws.root}: promote one of its versions instead"
        )
    version = reg.rollback(name, who)
    info = reg.version_info(name, version)
    sync_champion(cfg, ws)
    log.info("model %s: rolled back from version %s to %s", name, was, version)
    return {"model": name, "champion": version, "previous": was, **info}


def lineage(cfg: KCMConfig, ws: Workspace, version: int) -> dict[str, Any]:
    """Where registered model ``version`` came from: batches (with DVC hashes), code commit,
    config and the gate's decision."""
    reg = _registry(cfg, ws)
    return dict(reg.lineage(model_name(cfg, ws), version))
