"""End-to-end: `dvc repro` and `dvc exp run -S ...` on the default dataset, in a temporary git +
DVC copy of the project (its .gitignore, stages shortened through params.yaml): `dvc repro` on a
fresh clone leaves `git status` clean, and two experiments compare in `dvc exp
show`, `dvc metrics diff` and `dvc plots diff`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _run(
    args: list[str], cwd: Path, timeout: float = 600, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "kcm-test",
        "GIT_AUTHOR_EMAIL": "kcm@example.invalid",
        "GIT_COMMITTER_NAME": "kcm-test",
        "GIT_COMMITTER_EMAIL": "kcm@example.invalid",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (
        f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out


def test_dvc_repro_and_exp_run_reproduce_the_pipeline(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(REPO / "kcm", repo / "kcm", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.setdefault("data", {}).setdefault("stream", {})["n_batches"] = 2  # short: two cycles
    params.setdefault("routing", {}).update(epsilon=0.98, target_large_rate=None)
    params.setdefault("judge", {})["epochs"] = 8
    params.setdefault("eval", {})["kan_plot_inputs"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text((REPO / ".gitignore").read_text() + "\nmlflow/\n")
    _run(["git", "init", "-q"], repo)
    _run([str(BIN / "dvc"), "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "kcm copy"], repo)

    _run([str(BIN / "dvc"), "repro"], repo)
    pipe = repo / "data" / "pipeline"
    metrics = json.loads((pipe / "metrics.json").read_text())
    assert metrics["cycles"] == 2
    assert 0.5 < metrics["traffic"]["accuracy"] <= 1.0
    assert {"bwt", "forgetting", "forgetting_few"} <= set(metrics["forgetting"])
    for png in ("tradeoff.png", "accuracy_matrix.png", "reliability.png", "kan_judge.png"):
        assert (pipe / "figures" / png).is_file(), png
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "pretrain_large", "cycle"}
    shown = json.loads(_run([str(BIN / "dvc"), "metrics", "show", "--json"], repo).stdout)
    assert "data/pipeline/metrics.json" in json.dumps(shown)

    # a second repro has nothing to do
    again = _run([str(BIN / "dvc"), "repro"], repo).stdout
    assert "didn't change, skipping" in again and "Running stage" not in again

    # git keeps the metrics and the plots' CSV; a repro on a fresh clone changes nothing
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "pipeline run"], repo)
    kept = _run(["git", "ls-files", "data"], repo).stdout.split()
    assert {"data/pipeline/metrics.json", "data/pipeline/plots/tradeoff.csv"} <= set(kept), kept
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    again = _run([str(BIN / "dvc"), "repro"], clone).stdout  # no cache: it runs what it lacks
    assert "Running stage 'pretrain_large'" in again
    assert "Stage 'cycle' didn't change" in again  # the bootstrap hashed as committed
    dirty = _run(["git", "status", "--porcelain"], clone).stdout
    assert not dirty, f"dvc repro on a fresh clone changed:\n{dirty}"

    # an experiment with another epsilon re-runs the cycles only, and the setting takes effect
    # ... and never touches the production registry, even with MLFLOW_TRACKING_URI naming it
    prod = f"sqlite:///{tmp_path / 'production.db'}"
    exp = _run(
        [str(BIN / "dvc"), "exp", "run", "-S", "routing.epsilon=0.9"],
        repo,
        MLFLOW_TRACKING_URI=prod,
    ).stdout
    assert "Running stage 'cycle'" in exp
    assert "Running stage 'prepare'" not in exp and "Running stage 'pretrain_large'" not in exp
    assert yaml.safe_load((repo / "params.yaml").read_text())["routing"]["epsilon"] == 0.9
    changed = json.loads((pipe / "metrics.json").read_text())
    assert changed["cycles"] == 2
    assert changed["traffic"]["large_call_rate"] < metrics["traffic"]["large_call_rate"]
    ledger = json.loads((pipe / "workspace" / "state" / "ledger.json").read_text())
    assert [c["epsilon"] for c in ledger["cycles"]] == [0.9, 0.9]
    assert not (tmp_path / "production.db").exists()  # not even created
    assert not (repo / "mlflow").exists()
    from mlflow import MlflowClient

    from kcm.project import slug

    own = MlflowClient(tracking_uri=f"sqlite:///{pipe / 'workspace' / 'mlflow' / 'mlflow.db'}")
    name = ledger["model_name"]  # the pipeline's own model, named after the repository
    assert name == f"{slug(repo.name)}-pipeline-digits", name
    assert len(own.search_model_versions(f"name = '{name}'")) == 2  # the experiment's own

    # a second experiment: both print their metrics side by side, and diff
    _run([str(BIN / "dvc"), "exp", "run", "-S", "routing.epsilon=0.8"], repo)
    shown = json.loads(_run([str(BIN / "dvc"), "exp", "show", "--json"], repo).stdout)
    exps = {}
    for commit in shown:
        for e in commit.get("experiments") or []:
            for rev in e.get("revs") or []:
                data = rev.get("data") or {}
                eps = data["params"]["params.yaml"]["data"]["routing"]["epsilon"]
                exps[eps] = (rev["name"], data["metrics"]["data/pipeline/metrics.json"]["data"])
    assert set(exps) == {0.9, 0.8}, shown
    for _name, m in exps.values():
        assert m["cycles"] == 2 and 0.5 < m["traffic"]["accuracy"] <= 1.0
    (a, ma), (b, mb) = exps[0.9], exps[0.8]
    assert mb["traffic"]["large_call_rate"] < ma["traffic"]["large_call_rate"]
    keep = "Experiment|routing.epsilon|traffic.accuracy|traffic.large_call_rate|large_calls"
    table = _run(
        [str(BIN / "dvc"), "exp", "show", "--no-pager", "--csv", "--drop", ".*", "--keep", keep],
        repo,
    ).stdout
    rows = [r.split(",") for r in table.splitlines()]
    col = rows[0].index("traffic.large_call_rate")
    assert sum(1 for r in rows[1:] if r[col] not in ("", "!")) >= 3, table  # base + 2 exps
    diff = json.loads(_run([str(BIN / "dvc"), "metrics", "diff", a, b, "--json"], repo).stdout)
    assert "traffic.large_call_rate" in diff["data/pipeline/metrics.json"], diff
    plots = json.loads(_run([str(BIN / "dvc"), "plots", "diff", a, b, "--json"], repo).stdout)
    assert not plots.get("errors"), plots["errors"]
    (curve,) = plots["data"]["accuracy_vs_large_call_rate"]
    assert set(curve["revisions"]) == {a, b}
    drawn = {row["rev"] for row in curve["content"]["data"]["values"]}
    assert drawn == {a, b}, drawn
