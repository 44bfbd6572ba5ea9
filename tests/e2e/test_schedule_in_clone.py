"""End-to-end: the README's schedule commands in a fresh clone of the repository, with its
default workspace (the clone's root), git and DVC on (issue #21).

The clone is of the tree under test, not of its last commit: ``git clone`` of this repository,
then its working tree's files (``git ls-files``: tracked and new, not ignored) copied over and
committed, so the clone's ``.gitignore`` and ``data/`` are the ones being changed. The commands
are read from the README's "Run it once, or on a schedule" block and run as written (``kcm
serve`` aside: it runs until stopped); the clone's ``params.yaml``, committed like a project's
own, makes the run cheap (a callable large model, a logistic-regression judge, no plots). Every
command runs with the clone's code (PYTHONPATH) and HOME, TMPDIR and DVC's site cache in the
test's tmp dir: nothing is written outside it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
#: the cheapest run the README's commands allow: settings in the project's params.yaml
CHEAP = {
    ("large", "backend"): "callable",
    ("large", "callable", "target"): "tests.helpers:digits_large",
    ("judge", "kind"): "logreg",
    ("judge", "epochs"): 10,
    ("eval", "plots"): False,
}


def _readme_schedule() -> list[list[str]]:
    """The ``kcm`` commands of the README's schedule block, in order, but ``kcm serve``."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"Run it once, or on a schedule.*?```bash\n(.*?)```", text, re.S)
    assert found, "README.md: no bash block after 'Run it once, or on a schedule'"
    commands = [shlex.split(line, comments=True) for line in found.group(1).splitlines()]
    return [c for c in commands if c and c[0] == "kcm" and c[1] != "serve"]


def _env(tmp: Path, clone: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PYTHONPATH")
        and not k.startswith("KCM_")
    }
    for d in ("home", "tmp", "dvc-site-cache"):
        (tmp / d).mkdir(exist_ok=True)
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(clone),  # the clone's kcm, kcm_app, flows and tests.helpers
        HOME=str(tmp / "home"),
        TMPDIR=str(tmp / "tmp"),
        DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"),  # else /var/tmp/dvc
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="kcm-test",
        GIT_AUTHOR_EMAIL="kcm@example.invalid",
        GIT_COMMITTER_NAME="kcm-test",
        GIT_COMMITTER_EMAIL="kcm@example.invalid",
    )
    return env


def _run(
    args: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode in ok, (
        f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    )
    return out


def _clone_of_the_tree(tmp: Path, env: dict[str, str]) -> Path:
    """A git clone of the repository whose HEAD is the working tree under test."""
    clone = tmp / "kcm"
    _run(["git", "clone", "-q", "--no-checkout", str(REPO), str(clone)], tmp, env)
    listed = _run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO, env
    ).stdout
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():  # a deleted tracked file stays deleted
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    _run(["git", "add", "-A"], clone, env)
    _run(["git", "commit", "-q", "--allow-empty", "-m", "the working tree under test"], clone, env)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    for (*path, key), value in CHEAP.items():
        section = params
        for p in path:
            section = section.setdefault(p, {})
        section[key] = value
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "commit", "-q", "-am", "params: the cheapest run"], clone, env)
    return clone


def _untracked(clone: Path, env: dict[str, str]) -> list[str]:
    """``git status --porcelain``, every untracked file listed."""
    out = _run(["git", "status", "--porcelain", "--untracked-files=all"], clone, env).stdout
    return sorted(out.splitlines())


def _check_versioned(clone: Path, env: dict[str, str], n: int) -> list[str]:
    """The ``n`` batches are in data/batches/, each with a .dvc file git does not ignore,
    in sync with DVC's cache and remote. Returns the .dvc files."""
    batches = clone / "data" / "batches"
    data = sorted(p.name for p in batches.iterdir() if p.is_file() and p.suffix == ".csv")
    assert [d[:4] for d in data] == [f"{i:04d}" for i in range(n)], data
    dvcfiles = [f"data/batches/{d}.dvc" for d in data]
    for d, dvcfile in zip(data, dvcfiles, strict=True):
        assert (clone / dvcfile).is_file(), f"{dvcfile} missing"
        ignored = _run(["git", "check-ignore", "-q", dvcfile], clone, env, ok=(0, 1))
        assert ignored.returncode == 1, f"git ignores {dvcfile} (git check-ignore -v shows why)"
        _run(["git", "check-ignore", "-q", f"data/batches/{d}"], clone, env)  # the data: ignored
    # git ignores the data already, so DVC writes no .gitignore of its own beside it
    assert not (batches / ".gitignore").exists()
    dvc = str(BIN / "dvc")
    status = _run([dvc, "status", *dvcfiles], clone, env).stdout
    assert "Data and pipelines are up to date." in status, status
    remote = _run([dvc, "status", "--cloud", "--remote", "kcm", *dvcfiles], clone, env).stdout
    assert "Cache and remote 'kcm' are in sync." in remote, remote
    return dvcfiles


def test_the_readme_schedule_in_a_fresh_clone_leaves_only_dvc_files_to_commit(
    tmp_path: Path,
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: nothing to clone")
    commands = _readme_schedule()
    expected = [["kcm", "init"]] + [["kcm", "feed"], ["kcm", "continual"]] * 2
    assert [c[:2] for c in commands] == expected, commands
    env = _env(tmp_path, tmp_path / "kcm")
    clone = _clone_of_the_tree(tmp_path, env)
    assert _untracked(clone, env) == []

    runs = 0
    for cmd in commands:
        out = _run([str(BIN / cmd[0]), *cmd[1:]], clone, env)
        if cmd[1] != "continual":
            continue
        runs += 1
        assert "FileIsGitIgnored" not in out.stderr
        dvcfiles = _check_versioned(clone, env, n=runs + 1)
        new = dvcfiles if runs == 1 else dvcfiles[-1:]
        # all a user would commit: the new batches' .dvc files (the run's state, the MLflow
        # store, the GX project, the DVC remote and config, Prefect's home are ignored)
        assert _untracked(clone, env) == [f"?? {f}" for f in new]
        _run(["git", "add", "data"], clone, env)  # ... and commits
        _run(["git", "commit", "-q", "-m", f"batches of run {runs}"], clone, env)
        assert _untracked(clone, env) == []

    ledger = json.loads((clone / "state" / "ledger.json").read_text())
    assert [b["status"] for b in ledger["batches"].values()] == ["processed"] * 3
    assert all(b["dvc_md5"] and b["dvc_remote"] == "kcm" for b in ledger["batches"].values())
    report = json.loads((clone / "state" / "report.json").read_text())
    assert [c["cycle"] for c in report["cycles"]] == [0, 1, 2]  # the second run continued
    # the re-fed batches were recognised (same source, same content) and taken off the inbox
    assert not list((clone / "data" / "inbox").glob("*.csv"))
    # the workspace's stores are the clone's own, in its root
    for made in (".prefect", "mlflow/mlflow.db", "gx", "dvc-remote", ".dvc/config.local"):
        assert (clone / made).exists(), made
