"""DVC: version every ingested batch (``dvc add`` + ``dvc push``). The only importer of dvc.

The workspace is (or becomes) a DVC repository: a workspace that is its own git root gets a
git-backed DVC repo, anything else ``dvc init --no-scm``. The remote defaults to a local
folder (``<workdir>/dvc-remote``); ``dvc.remote`` in the config names any DVC remote URL
(``s3://bucket/kcm``, with the ``dvc[s3]`` extra installed). ``dvc pull``/``dvc checkout``
in the workspace restore any batch a registered model has seen.

kcm's settings (the remote, no analytics) go into the workspace's ``.dvc/config.local``, which
DVC keeps out of git: a workspace that is a git checkout (the repository root, the default)
never gets a machine's paths in its committed ``.dvc/config``. DVC refusing to version a file
(git ignores its ``.dvc`` file, the remote cannot be written, ...) is an ``EnvironmentFault``
whose one line names the file and the fix: the file itself is never at fault.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from kcm.env import apply_offline_env
from kcm.errors import EnvironmentFault

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
    has_default = bool(repo.config["core"].get("remote"))  # any level: a team's own default
    with repo.config.edit("local") as conf:  # .dvc/config.local: this machine's, not git's
        core = conf.setdefault("core", {})
        core["analytics"] = False
        core["check_update"] = False
        if not has_default:
            core["remote"] = remote_name
        remotes = conf.setdefault("remote", {})
        if remotes.get(remote_name, {}).get("url") != remote_url:
            remotes[remote_name] = {"url": remote_url}
    repo.close()
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
    dvcfile = path.with_name(path.name + ".dvc")
    step, repo = "open", None
    try:
        repo = _repo(root, url, remote_name)
        step = "add"
        repo.add([str(path)])
        step = "push"
        repo.push(targets=[str(dvcfile)], remote=remote_name)
    except _environment_errors() as err:
        raise _refused(root, path, step, f"'{remote_name}' ({url})", err) from err
    finally:
        if repo is not None:
            repo.close()
    out = yaml.safe_load(dvcfile.read_text())["outs"][0]
    return {
        "dvc_file": str(dvcfile.relative_to(root)),
        "dvc_md5": out["md5"],
        "dvc_remote": remote_name,
        "dvc_remote_url": url,
    }


def _rel(root: Path, path: Path) -> str:
    return os.path.relpath(path, root) if path.is_relative_to(root) else str(path)


def _ignored_by(root: Path, rel: str) -> str | None:
    """Which ignore file, line and pattern make git ignore ``rel`` (``git check-ignore -v``),
    or None when git does not say."""
    try:
        out = subprocess.run(
            ["git", "check-ignore", "-v", "--no-index", "--", rel],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    source = out.stdout.split("\t", 1)[0].strip()  # <file>:<line>:<pattern>
    if out.returncode != 0 or source.count(":") < 2 or source.split(":", 2)[2].startswith("!"):
        return None  # not ignored (-v also shows the negation that re-includes a path)
    return source


def _environment_errors() -> tuple[type[Exception], ...]:
    """What DVC raises when the workspace around a file refuses it: DVC's, git's, the OS's."""
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    return (DvcException, SCMError, OSError)


def _refused(root: Path, path: Path, step: str, remote: str, err: Exception) -> EnvironmentFault:
    """DVC's error on ``dvc add``/``dvc push`` of ``path``, as one line naming the file and
    the fix."""
    from dvc.dvcfile import FileIsGitIgnored

    rel = _rel(root, path)
    if isinstance(err, FileIsGitIgnored):
        dvcfile = f"{rel}.dvc"
        by = _ignored_by(root, dvcfile)
        return EnvironmentFault(
            f"DVC refuses {dvcfile} because git ignores it"
            + (f" ({by})" if by else "")
            + ": remove the pattern that matches it from .gitignore, or add '!*.dvc' after it"
            + ("" if by else f" (git check-ignore -v {dvcfile} shows which)")
            + ", then run again"
        )
    what = " ".join(f"{type(err).__name__}: {err}".split())  # one line
    if step == "push":
        return EnvironmentFault(
            f"DVC could not push {rel} to the remote {remote}: {what}: check that the remote "
            "is reachable and writable (dvc.remote, its credentials), then run again"
        )
    return EnvironmentFault(
        f"DVC could not version {rel} (dvc {step}): {what}: check the DVC repository in "
        f"{root} (its .dvc/ folder; dvc doctor, dvc status), then run again"
    )


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
