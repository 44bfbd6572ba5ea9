"""DVC: version every ingested batch (``dvc add`` + ``dvc push``). The only importer of dvc.

The workspace is (or becomes) a DVC repository: a workspace that is its own git root gets a
git-backed DVC repo, anything else ``dvc init --no-scm``. The remote defaults to a local
folder (``<workdir>/dvc-remote``); ``dvc.remote`` in the config names any DVC remote URL
(``s3://bucket/kcm``, with the ``dvc[s3]`` extra installed). ``dvc pull``/``dvc checkout``
in the workspace restore any batch a registered model has seen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from kcm.env import apply_offline_env

log = logging.getLogger(__name__)


def _import_dvc() -> Any:
    """Import dvc and detach the console handlers it installs on import (bound to the
    import-time stdout): its records then go through ordinary logging, warnings and up."""
    apply_offline_env()
    from dvc.repo import Repo

    for name in ("dvc", "dvc_objects", "dvc_data"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.setLevel(logging.WARNING)
        lg.propagate = True
    return Repo


def _repo(root: Path, remote_url: str, remote_name: str) -> Any:
    Repo = _import_dvc()
    if not (root / ".dvc").is_dir():
        Repo.init(str(root), no_scm=not (root / ".git").exists())
        log.info("initialised a DVC repository in %s", root)
    repo = Repo(str(root))
    with repo.config.edit("repo") as conf:
        conf.setdefault("core", {})
        conf["core"]["analytics"] = False
        conf["core"]["check_update"] = False
        if not conf["core"].get("remote"):
            conf["core"]["remote"] = remote_name
        remotes = conf.setdefault("remote", {})
        if remotes.get(remote_name, {}).get("url") != remote_url:
            remotes[remote_name] = {"url": remote_url}
    return Repo(str(root))


def default_remote(root: Path) -> str:
    return str(root / "dvc-remote")


def version_file(
    root: str | Path, path: str | Path, remote_url: str | None = None, remote_name: str = "kcm"
) -> dict[str, Any]:
    """``dvc add`` one file inside the workspace and push it to the remote.

    Returns the ``.dvc`` file's path (relative to the workspace), the md5 DVC stores it under
    and the remote's name and URL."""
    root = Path(root).resolve()
    path = Path(path).resolve()
    url = remote_url or default_remote(root)
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    repo = _repo(root, url, remote_name)
    try:
        repo.add([str(path)])
        dvcfile = path.with_name(path.name + ".dvc")
        repo.push(targets=[str(dvcfile)], remote=remote_name)
    finally:
        repo.close()
    out = yaml.safe_load(dvcfile.read_text())["outs"][0]
    return {
        "dvc_file": str(dvcfile.relative_to(root)),
        "dvc_md5": out["md5"],
        "dvc_remote": remote_name,
        "dvc_remote_url": url,
    }


def restore(root: str | Path, dvc_file: str | Path, remote_name: str | None = None) -> Path:
    """Bring a versioned file back from the cache or the remote (``dvc pull``)."""
    Repo = _import_dvc()

    root = Path(root).resolve()
    repo = Repo(str(root))
    try:
        repo.pull(targets=[str(root / dvc_file)], remote=remote_name)
    finally:
        repo.close()
    return (root / dvc_file).with_suffix("")
