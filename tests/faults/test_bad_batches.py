"""The fault suite, part 2: a bad batch never blocks the loop. A cell a later step could not
read fails validation (the row is dropped and reported); a batch whose cycle keeps failing
is quarantined with its error after ``flow.max_attempts`` and the next batch is processed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kcm import loop, steps
from kcm.config import load_config
from kcm.cycle import CycleFailed
from kcm.workspace import Workspace

pytestmark = pytest.mark.slow

BASE = [
    "large.backend=callable",
    "large.callable.target=tests.helpers:digits_large",
    "judge.epochs=10",
    "data.stream.n_batches=2",
    "registry.enabled=false",
    "dvc.enabled=false",
    "eval.plots=false",
    "flow.max_attempts=2",
]


def test_a_failing_batch_is_set_aside_and_the_next_is_processed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(None, BASE)
    ws = Workspace(tmp_path / "ws")
    steps.feed(cfg, ws.inbox)
    second = Path(ws.inbox) / "batch-001.csv"
    df = pd.read_csv(second)
    col = next(c for c in df.columns if c.startswith("px"))
    df[col] = df[col].astype(object)
    df.loc[3, col] = "abc"  # one bad cell: the route step could not read it
    df.to_csv(second, index=False)

    real_learn = steps.learn

    def learn_that_fails_on_the_first_batch(c, w, name):
        if "batch-000" in name:
            raise RuntimeError("disk on fire")
        return real_learn(c, w, name)

    monkeypatch.setattr(steps, "learn", learn_that_fails_on_the_first_batch)
    with pytest.raises(CycleFailed, match=r"disk on fire.*attempt 1 of 2"):
        loop.run(cfg, ws)  # attempt 1 of 2: the run fails, the batch stays pending
    ledger = ws.load_ledger()
    first = ledger.order[0]
    assert ledger.batches[first].status == "ingested" and ledger.batches[first].failures == 1

    loop.run(cfg, ws)  # attempt 2: set aside, and the batch behind it goes through
    ledger = ws.load_ledger()
    assert ledger.batches[first].status == "quarantined"
    assert "disk on fire" in (ledger.batches[first].reason or "")
    report = json.loads((ws.quarantine / f"{first}.report.json").read_text())
    assert report["failures"][0]["expectation"] == "processed_without_error"
    nxt = ledger.order[1]
    assert ledger.batches[nxt].status == "processed"
    dropped = json.loads((ws.quarantine / f"{nxt}.dropped.report.json").read_text())
    assert dropped["bad_rows"] == [3]
    assert any(f.get("examples") == ["abc"] for f in dropped["failures"])
