"""The drift alarm: a batch from another domain raises it, a batch like the others does not
(digits, the library loop in-process, registry/DVC/plots off)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kcm import loop, steps
from kcm.config import load_config
from kcm.workspace import Workspace
from tests.helpers import QUIET

pytestmark = pytest.mark.slow


def test_a_batch_from_another_domain_raises_the_drift_alarm_a_normal_one_does_not(
    tmp_path: Path,
) -> None:
    sets = [
        "large.backend=callable",
        "large.callable.target=tests.helpers:digits_large",
        "judge.epochs=20",
        "data.stream.n_batches=4",
        *QUIET,
        f"flow.workdir={tmp_path / 'ws'}",
    ]
    cfg = load_config(None, sets)
    ws = Workspace(tmp_path / "ws", cfg.flow.inbox)
    feed = tmp_path / "feed"
    steps.feed(cfg, feed)
    inbox = Path(ws.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    for b in (0, 1):
        shutil.copy(feed / f"batch-{b:03d}.csv", inbox / f"batch-{b:03d}.csv")
    loop.run(cfg, ws)
    shutil.copy(feed / "batch-002.csv", inbox / "batch-002.csv")
    # another domain that validation lets through: noise images, each pixel drawn within the
    # range it had in the pretraining data (an out-of-range pixel would be quarantined)
    other = pd.read_csv(feed / "batch-003.csv")
    rng = np.random.default_rng(0)
    for col, (lo, hi) in ws.meta()["feature_ranges"].items():
        other[col] = rng.uniform(lo, hi, len(other)).round() if hi > lo else lo
    other.to_csv(inbox / "batch-003-noise.csv", index=False)
    report = loop.run(cfg, ws)
    drift = {c["batch"].split("-", 1)[1]: c["drift"] for c in report["cycles"] if c.get("drift")}
    normal = next(d for k, d in drift.items() if k.startswith("batch-002"))
    shifted = next(d for k, d in drift.items() if k.startswith("batch-003-noise"))
    assert not normal["alarm"] and normal["score"] < cfg.eval.drift_alarm, normal
    assert shifted["alarm"] and shifted["score"] > cfg.eval.drift_alarm, shifted
    assert shifted["mean_confidence"] < normal["mean_confidence"]
    assert np.isclose(shifted["bound"], cfg.eval.drift_alarm)
    assert report["cycles"][0].get("drift") is None  # no version evaluated before the first
