"""MLflow: the collaboration system as one pyfunc model, and registry aliases.

The only importer of mlflow. The embedded default is a SQLite tracking store under
``<workdir>/mlflow/`` with artifacts beside it; ``MLFLOW_TRACKING_URI`` points the same code at
a tracking server. Weights travel inside the model as the saved system folder
(``kcm.persist``: safetensors + npz, loaded without pickle); requirements are explicit.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from kcm.env import apply_offline_env
from kcm.errors import RegistryError
from kcm.evaluation.gate import Decision

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"


# The user's setting, read once: mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into
# os.environ itself, so reading it later would pick up the previous workspace's store.
_USER_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(workdir: str | Path, configured: str | None = None) -> str:
    """``registry.tracking_uri`` if configured, else ``MLFLOW_TRACKING_URI`` if the user set
    it, else the embedded default: SQLite under ``<workdir>/mlflow/`` (the setting's documented
    order; the DVC pipeline relies on it to keep experiments out of the production store)."""
    return configured or _USER_URI or f"sqlite:///{Path(workdir).resolve()}/mlflow/mlflow.db"


def setup(workdir: str | Path, experiment: str = "kcm", configured: str | None = None) -> str:
    """Point mlflow at the tracking store and make sure the experiment exists. A local SQLite
    store keeps its artifacts beside it (not in ``./mlruns``); one that was moved or copied
    with its workspace is rebased onto its new place first (``rebase_local_store``)."""
    apply_offline_env()
    uri = tracking_uri(workdir, configured)
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).resolve()
        art = db.parent / "artifacts"
        art.mkdir(parents=True, exist_ok=True)
        location = art.as_uri()
        rebase_local_store(db, experiment, location)
    elif uri.startswith("sqlite:"):
        raise ValueError(f"tracking URI {uri!r}: use sqlite:///path/to/mlflow.db")
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(experiment, location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


#: the columns of MLflow's SQL schema that hold an artifact location
_LOCATIONS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def rebase_local_store(db: Path, experiment: str, location: str) -> int:
    """A SQLite store names its artifacts by absolute ``file://`` URIs, so a workspace that was
    moved or copied would go on reading and writing the old folder (another project's, for a
    copy). When the experiment's artifact location is another ``.../artifacts`` folder than
    the one beside ``db``, every location under it is rewritten to the same place under
    ``location``, in one transaction. Returns the rows changed (0: nothing moved)."""
    import sqlite3

    if not db.is_file():
        return 0
    con = sqlite3.connect(db, timeout=60)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return 0
        row = con.execute(  # the named experiment, else any of the store's (one folder)
            "SELECT artifact_location FROM experiments WHERE artifact_location LIKE '%/artifacts' "
            "ORDER BY name = ? DESC, experiment_id LIMIT 1",
            (experiment,),
        ).fetchone()
        old = row[0] if row else None
        if not old or old == location or not old.endswith("/artifacts"):
            return 0
        changed = 0
        with con:
            for table, col in _LOCATIONS:
                if table not in tables:
                    continue
                cur = con.execute(
                    f"UPDATE {table} SET {col} = ? || substr({col}, ?) "  # names: _LOCATIONS
                    f"WHERE {col} = ? OR substr({col}, 1, ?) = ?",
                    (location, len(old) + 1, old, len(old) + 1, old + "/"),
                )
                changed += cur.rowcount
        log.info("tracking store moved: %s -> %s (%d locations rebased)", old, location, changed)
        return changed
    finally:
        con.close()


def set_aliases(name: str, version: int | str, decision: Decision) -> None:
    """Challenger always; champion only when the gate says so. Reasons go to version tags."""
    c = MlflowClient()
    c.set_model_version_tag(
        name, str(version), "kcm.gate", "promote" if decision.promote else "refuse"
    )
    c.set_model_version_tag(name, str(version), "kcm.gate_reasons", decision.summary()[:5000])
    c.set_registered_model_alias(name, CHALLENGER, str(version))
    if decision.promote:
        previous = champion_version(name)
        if previous is not None:
            c.set_model_version_tag(name, str(version), "kcm.previous_champion", str(previous))
        c.set_registered_model_alias(name, CHAMPION, str(version))


def alias_version(name: str, alias: str) -> int | None:
    try:
        return int(MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def champion_version(name: str) -> int | None:
    return alias_version(name, CHAMPION)


def drop_version(name: str, version: int | str) -> None:
    """Remove a half-registered version (a failure between registering and tagging)."""
    import contextlib

    with contextlib.suppress(mlflow.exceptions.MlflowException):
        MlflowClient().delete_model_version(name, str(version))


def promote(name: str, version: int, who: str = "a person") -> int | None:
    """Point champion at ``version`` by hand; recorded as tags. Returns the previous champion."""
    c = MlflowClient()
    previous = champion_version(name)
    c.set_model_version_tag(
        name, str(version), "kcm.manual_promotion", f"by {who}, from {previous}"
    )
    if previous is not None:
        c.set_model_version_tag(name, str(version), "kcm.previous_champion", str(previous))
    c.set_registered_model_alias(name, CHAMPION, str(version))
    return previous


def rollback_target(name: str) -> int:
    """The version the champion replaced (its ``kcm.previous_champion`` tag)."""
    was = champion_version(name)
    if was is None:
        raise RegistryError(f"model {name} has no champion to roll back")
    prev = MlflowClient().get_model_version(name, str(was)).tags.get("kcm.previous_champion")
    if not prev:
        raise RegistryError(
            f"version {was} of {name} replaced no earlier champion: nothing to roll back to"
        )
    return int(prev)


def rollback(name: str, who: str = "a person") -> int:
    """Point champion back at the version it replaced (from the ``kcm.previous_champion`` tag)."""
    was = champion_version(name)
    prev = str(rollback_target(name))
    c = MlflowClient()
    c.set_model_version_tag(name, prev, "kcm.rollback", f"by {who}, from version {was}")
    c.set_registered_model_alias(name, CHAMPION, prev)
    return int(prev)


def run_tags(run_id: str) -> dict[str, str]:
    return dict(MlflowClient().get_run(run_id).data.tags)


def owners(name: str) -> dict[int, tuple[str | None, str | None]]:
    """Each registered version of model ``name`` -> the workspace that registered it: (its
    id, its folder) as kcm tagged the version or its run; (None, None) for a version kcm did
    not register. No model of that name: empty."""
    c = MlflowClient()
    out: dict[int, tuple[str | None, str | None]] = {}
    for mv in c.search_model_versions(f"name = '{name}'"):
        wid, path = mv.tags.get("kcm.workspace_id"), mv.tags.get("kcm.workspace")
        if wid is None and mv.run_id:  # registered before versions carried the id
            try:
                tags = run_tags(mv.run_id)
            except mlflow.exceptions.MlflowException:  # a run deleted since
                tags = {}
            wid, path = wid or tags.get("kcm.workspace_id"), path or tags.get("kcm.workspace")
        out[int(mv.version)] = (wid, path)
    return out


def code_commit() -> str | None:
    """The git commit of the kcm code, when it runs from a git checkout."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _version(name: str, version: int | str) -> Any:
    try:
        return MlflowClient().get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException as err:
        known = [int(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'")]
        raise RegistryError(
            f"model {name!r} has no version {version}; registered versions: "
            f"{sorted(known) or 'none'} (tracking store: {mlflow.get_tracking_uri()})"
        ) from err


def version_info(name: str, version: int | str) -> dict[str, Any]:
    mv = _version(name, version)
    sv = mv.tags.get("kcm.system_version")
    return {
        "model": name,
        "version": int(mv.version),
        "system_version": int(sv) if sv not in (None, "") else None,
        "run_id": mv.run_id,
        "aliases": list(mv.aliases or []),
        "tags": dict(mv.tags),
    }


def lineage(name: str, version: int | str) -> dict[str, Any]:
    """The batches (with content and DVC hashes), code commit, config and gate decision
    recorded with a registered version."""
    import json
    import tempfile

    mv = _version(name, version)
    run = MlflowClient().get_run(mv.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path="lineage.json", dst_path=tmp
        )
        data = json.loads(Path(path).read_text())
    aliases = MlflowClient().get_registered_model(name).aliases
    return {
        "model": name,
        "version": int(mv.version),
        "aliases": sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
        "run_id": mv.run_id,
        "git_commit": run.data.tags.get("kcm.git_commit"),
        "batches": data.get("batches", []),
        "gate": mv.tags.get("kcm.gate_reasons"),
        "manual": {
            k: v for k, v in mv.tags.items() if k in ("kcm.manual_promotion", "kcm.rollback")
        },
        "config": {k: v for k, v in run.data.params.items()},
    }
