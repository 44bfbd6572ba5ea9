"""The fault suite, part 5: SIGKILL after each step of a cycle, then a re-run: every batch ends processed once, its answers delivered, and no request is ever
sent twice (the counting loopback endpoint sees each prompt once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kcm.cycle import STEPS
from kcm.workspace import Workspace
from tests.llm_server import LLMServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(out: Path, url: str, failpoint: str | None) -> subprocess.CompletedProcess[str]:
    sets = [
        "large.backend=openai",
        f"large.openai.base_url={url}",
        "data.stream.n_batches=2",
        "registry.enabled=false",
        "dvc.enabled=false",
        "eval.plots=false",
        "eval.traffic_size=60",
    ]
    args = [sys.executable, "-m", "kcm_app.cli", "run", "--in-process", "--no-progress"]
    for s in sets:
        args += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k != "KCM_FAILPOINT"}
    if failpoint:
        env["KCM_FAILPOINT"] = failpoint
    return subprocess.run(
        [*args, "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_killed_after_each_step_the_reruns_lose_nothing_and_pay_nothing_twice(
    tmp_path: Path,
) -> None:
    """One workspace, one kill after each step of the first batch's cycle in turn (validate,
    route, call_large, deliver, learn, evaluate, commit, publish), each followed by the next run; then a run
    to the end."""
    out = tmp_path / "ws"
    with LLMServer([str(i) for i in range(10)]) as srv:
        for step in STEPS:
            killed = _run(out, srv.base_url, f"cycle:after-{step}")
            assert killed.returncode == -signal.SIGKILL, (step, killed.stderr[-2000:])
        again = _run(out, srv.base_url, None)
        assert again.returncode == 0, again.stderr[-2000:]
        prompts = Counter(
            (r["body"]["messages"][-1]["content"], r["body"]["model"]) for r in srv.requests
        )
    assert max(prompts.values()) == 1  # no prompt was sent twice across the kills
    ws = Workspace(out)
    ledger = ws.load_ledger()
    assert [ledger.batches[n].status for n in ledger.order] == ["processed", "processed"]
    assert [c["batch"] for c in ledger.cycles] == ledger.order  # each learned once
    answers = sorted(p.name for p in (out / "data" / "answers").glob("*.csv"))
    assert len(answers) == 2
    versions = sorted(p.name for p in (out / "state" / "systems").iterdir())
    assert versions == ["v0000", "v0001", "v0002"]  # no version of a killed cycle left over
