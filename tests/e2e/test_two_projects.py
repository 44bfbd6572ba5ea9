"""Two projects on one MLflow tracking store and one Prefect API: each registers its own model,
names and tags its own runs and artifacts, and neither can move the other's aliases, whatever
registry command or run is tried with the other's model name."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kcm import steps
from kcm.config import config_to_dict, load_config
from kcm.errors import RegistryError
from kcm.workspace import Workspace
from tests.helpers import REGISTERED_DIGITS

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, name: str, store: str, *extra: str) -> tuple[str, Workspace]:
    cfg = load_config(
        None,
        [
            *REGISTERED_DIGITS,
            "validation.data_docs=false",
            f"registry.tracking_uri={store}",
            f"flow.workdir={tmp_path / name}",
            *extra,
        ],
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    steps.feed(cfg, Path(cfg.flow.workdir) / "data" / "inbox")
    return str(path), Workspace(tmp_path / name, cfg.flow.inbox)


def _aliases(client: Any, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).aliases)


def test_two_projects_on_one_server_never_touch_each_other(
    tmp_path: Path, prefect_api: None
) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client

    from flows.continual import continual_flow
    from flows.serve import deployment_name

    store = f"sqlite:///{tmp_path / 'shared.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    since = datetime.datetime.now(datetime.UTC)  # the worker's API is shared
    alpha_cfg, alpha = _project(tmp_path, "alpha", store)
    beta_cfg, beta = _project(tmp_path, "beta", store)
    for cfg_path in (alpha_cfg, beta_cfg):  # what each project's scheduled run executes
        state = continual_flow(config_path=cfg_path, init=True, return_state=True)
        assert state.is_completed(), state.message

    # each its own model, experiment and versions, tagged with its workspace
    for ws, name in ((alpha, "alpha"), (beta, "beta")):
        versions = client.search_model_versions(f"name = '{name}-digits'")
        assert len(versions) == 2
        me = ws.load_ledger().workspace_id
        assert {v.tags["kcm.workspace_id"] for v in versions} == {me}
        assert client.get_experiment_by_name(f"kcm-{name}") is not None
        assert deployment_name(Path(tmp_path / f"{name}.yaml"), ws.root) == name
    before = {m: _aliases(client, m) for m in ("alpha-digits", "beta-digits")}

    # beta pointed at alpha's model: every registry command and a run are refused
    intruder = load_config(beta_cfg, ["registry.model_name=alpha-digits"])
    for attempt in (
        lambda: steps.promote(intruder, beta, 1, "test"),
        lambda: steps.rollback(intruder, beta, "test"),
        lambda: steps.sync_champion(intruder, beta),
    ):
        with pytest.raises(RegistryError, match="holds versions of another project") as err:
            attempt()
        assert str(alpha.root) in str(err.value) and str(beta.root) in str(err.value)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["promote", "--version", "2", "--config", beta_cfg, "--workdir", str(beta.root)]
    cli = subprocess.run(
        [sys.executable, "-m", "kcm_app.cli", *args, "--set", "registry.model_name=alpha-digits"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert cli.returncode == 2, cli.stderr[-2000:]
    assert "Traceback" not in cli.stderr and "holds versions of another project" in cli.stderr
    state = continual_flow(
        config_path=beta_cfg, overrides=["registry.model_name=alpha-digits"], return_state=True
    )
    assert state.is_failed() and "holds versions of another project" in str(state.message)

    after = {m: _aliases(client, m) for m in ("alpha-digits", "beta-digits")}
    assert after == before, "an alias moved across projects"
    assert len(client.search_model_versions("name = 'alpha-digits'")) == 2

    # Prefect: runs named and tagged by project, artifacts under each project's own keys
    with get_client(sync_client=True) as pc:
        runs = [r for r in pc.read_flow_runs(limit=200) if r.created >= since]
        keys = {a.key for a in pc.read_artifacts()}
    for name in ("alpha", "beta"):
        own = [r for r in runs if f"project:{name}" in r.tags]
        assert own and all(r.name.startswith(f"{name}-") for r in own), [r.name for r in own]
        assert f"kcm-{name}-continual" in keys
