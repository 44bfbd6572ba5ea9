"""The fault suite: spend caps (issue #24). A daily cap set to half of what a run would
spend stops paid calls at the cap (within one call's price), loses no batch (the refused
queries are answered by the small model, the batches left wait), and the next day (the
caps' clock moved on) the run resumes, paying again."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

import kcm.budget
from kcm import events, loop, steps
from kcm.config import load_config
from kcm.workspace import Workspace
from tests.helpers import QUIET
from tests.llm_server import LLMServer

pytestmark = pytest.mark.slow

DIGITS = [str(i) for i in range(10)]
CALL = 0.01  # the price of one call


def _settings(url: str, *extra: str) -> list[str]:
    return [
        "large.backend=openai",
        f"large.openai.base_url={url}",
        "large.openai.backoff=0.01",
        f"large.price.per_call={CALL}",
        "large.price.input_per_1m=0",
        "large.price.output_per_1m=0",
        "data.stream.n_batches=3",
        "judge.epochs=10",
        "eval.traffic_size=60",
        *QUIET,
        *extra,
    ]


def _answers(ws: Workspace) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for f in sorted((ws.root / "data" / "answers").glob("*.csv")):
        with open(f, newline="") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def test_a_daily_cap_stops_at_the_cap_loses_no_batch_and_resumes_the_next_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LLMServer(DIGITS) as srv:
        cfg = load_config(None, _settings(srv.base_url))
        free = Workspace(tmp_path / "free")
        steps.feed(cfg, free.inbox)
        whole = loop.run(cfg, free)["money"]["spent"]["serve"]  # what the run spends uncapped
        assert whole >= 6 * CALL

        cap = whole / 2
        cfg = load_config(None, _settings(srv.base_url, f"large.budget.per_day={cap}"))
        ws = Workspace(tmp_path / "capped")
        steps.feed(cfg, ws.inbox)
        first = loop.run(cfg, ws)
        run = first["run"]
        assert run["budget_exhausted"], "the cap refused no call"
        day = first["money"]["budget"]["spent"]["day"]
        assert cap - CALL <= day <= cap + 1e-9  # stopped at the cap, within one call's price
        assert first["money"]["spent"]["serve"] == pytest.approx(day)
        rows = _answers(ws)
        budget_rows = [r for r in rows if r["answered_by"] == "small-budget"]
        assert budget_rows and all(float(r["cost"]) == 0 for r in budget_rows)
        assert all(
            float(r["cost"]) == pytest.approx(CALL) for r in rows if r["answered_by"] == "large"
        )
        kinds = [e["event"] for e in events.recorded(ws)]
        assert "kcm.budget.exhausted" in kinds

        again = loop.run(cfg, ws)  # the same day: nothing more is paid
        assert not again["run"]["processed"]
        assert again["money"]["budget"]["spent"]["day"] == pytest.approx(day)

        now = kcm.budget.now()
        processed = run["processed"]
        for days in range(1, 4):  # the next day (and the one after, if the rest needs it)
            monkeypatch.setattr(kcm.budget, "now", lambda d=days: now + d * kcm.budget.DAY + 1)
            later = loop.run(cfg, ws)
            processed += later["run"]["processed"]
            assert later["money"]["budget"]["spent"]["day"] <= cap + 1e-9
            if not later["run"]["waiting"]:
                break
        assert len(processed) == 3 and not later["run"]["quarantined"]
        ledger = ws.load_ledger()
        assert all(b.status == "processed" for b in ledger.batches.values())
        paid = sum(c["money"]["spent"] for c in ledger.cycles)
        assert paid == pytest.approx(sum(float(r["cost"]) for r in _answers(ws)))
    report = json.loads((ws.state / "report.json").read_text())
    assert report["money"]["budget"]["per_day"] == cap


def test_killed_after_paying_the_cap_still_holds_and_no_spend_goes_uncounted(
    tmp_path: Path,
) -> None:
    """SIGKILL right after a chunk's calls were answered (paid), before their reservation was
    settled: each answer was stored the moment it arrived, so the next run pays none of them
    again, and the unsettled reservation still counts them: what the endpoint billed in all
    stays within the daily caps (serving and evaluation), the spend record never counts less,
    and no prompt was paid twice."""
    import os
    import signal
    import subprocess
    import sys

    from kcm.budget import SpendGuard

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "ws"
    cap = 0.5  # 50 calls serving, 50 evaluating

    def run(url: str, failpoint: str | None) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "kcm_app.cli", "run", "--in-process", "--no-progress"]
        caps = (f"large.budget.per_day={cap}", f"large.budget.evaluate_per_day={cap}")
        for s in _settings(url, *caps, "large.openai.concurrency=2"):
            args += ["--set", s]
        env = {k: v for k, v in os.environ.items() if k != "KCM_FAILPOINT"}
        if failpoint:
            env["KCM_FAILPOINT"] = failpoint
        return subprocess.run(
            [*args, "--out", str(out)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    with LLMServer(DIGITS) as srv:
        killed = run(srv.base_url, "large:answered")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        paid_before_kill = srv.billed["answered"]
        assert paid_before_kill > 0
        again = run(srv.base_url, None)
        assert again.returncode in (0, 5), again.stderr[-2000:]
        billed = srv.billed["answered"] * CALL
        prompts = Counter(json.dumps(r["body"], sort_keys=True) for r in srv.requests)
    assert max(prompts.values()) == 1, "a prompt was paid twice across the kill"
    record = out / "state" / "spend.sqlite"
    counted = sum(
        SpendGuard(p, "any", None, cap, record).spent()["day"] for p in ("serve", "evaluate")
    )
    assert billed <= 2 * cap + 1e-9, f"the endpoint billed {billed:.2f} against caps of 2 × {cap}"
    assert counted >= billed - 1e-9, "a paid call went uncounted"


def test_through_the_flows_a_reached_cap_ends_the_run_budget_exhausted_with_status_5(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kcm_app.cli import main
    from tests.helpers import set_args

    out = tmp_path / "o"
    with LLMServer(DIGITS) as srv:
        status = main(
            [
                "run",
                "--no-progress",
                "--out",
                str(out),
                *set_args(*_settings(srv.base_url, f"large.budget.per_run={10 * CALL}")),
            ]
        )
    assert status == 5
    assert "spend cap is reached" in capsys.readouterr().err
    report = json.loads((out / "state" / "report.json").read_text())
    assert report["run"]["budget_exhausted"] and report["money"]["budget"]["refused"] > 0
    assert report["money"]["spent"]["serve"] <= 10 * CALL + 1e-9
    kinds = [e["event"] for e in events.recorded(Workspace(out))]
    assert "kcm.budget.exhausted" in kinds
