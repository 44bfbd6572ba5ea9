"""The two ways of running a cycle are one driver (``kcm.cycle``): the same batches through
``loop.run`` in this process and through the ``kcm-continual`` flow (each step a Prefect
task, each cycle a subflow) give the same ledger, answers and events."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kcm import events, loop, steps
from kcm.config import config_to_dict, load_config
from kcm.workspace import Workspace
from tests.helpers import TINY_DIGITS

pytestmark = pytest.mark.slow

SETS = [*TINY_DIGITS, "data.stream.n_batches=3"]


def _workspace(tmp_path: Path, name: str) -> tuple[Path, Workspace]:
    cfg = load_config(None, [*SETS, f"flow.workdir={tmp_path / name}"])
    ws = Workspace(tmp_path / name)
    steps.feed(cfg, ws.inbox)
    bad = Path(ws.inbox) / "batch-001.csv"  # one batch quarantined at validation
    bad.write_text("not,the,columns\n1,2,3\n")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path, ws


def _ledger_view(ws: Workspace) -> dict[str, object]:
    ledger = ws.load_ledger()
    return {
        "batches": {n: (r.status, r.version, r.failures) for n, r in ledger.batches.items()},
        "champion": ledger.champion,
        "challenger": ledger.challenger,
        "cycles": [
            (
                c["batch"],
                c["version"],
                c["published"],
                round(c["accuracy"], 6),
                c["gate"]["promote"],
            )
            for c in ledger.cycles
        ],
    }


def test_in_process_and_flow_runs_give_the_same_ledger_answers_and_events(
    tmp_path: Path,
) -> None:
    from flows.continual import continual_flow

    path_a, a = _workspace(tmp_path, "in_process")
    loop.run(load_config(path_a), a)
    path_b, b = _workspace(tmp_path, "flows")
    state = continual_flow(config_path=str(path_b), init=True, return_state=True)
    assert state.is_completed(), state.message

    assert _ledger_view(a) == _ledger_view(b)
    answers_a = sorted((a.root / "data" / "answers").glob("*.csv"))
    answers_b = sorted((b.root / "data" / "answers").glob("*.csv"))
    assert [p.name for p in answers_a] == [p.name for p in answers_b] and len(answers_a) == 2
    for x, y in zip(answers_a, answers_b, strict=True):
        pd.testing.assert_frame_equal(pd.read_csv(x), pd.read_csv(y))

    def seen(ws: Workspace) -> list[tuple[str, str]]:
        return [(e["event"], e.get("batch", "")) for e in events.recorded(ws)]

    assert seen(a) == seen(b)
    assert ("kcm.batch.quarantined", a.load_ledger().order[1]) in seen(a)
    report = json.loads((b.state / "report.json").read_text())
    assert report["run"]["quarantined"] == [b.load_ledger().order[1]]
