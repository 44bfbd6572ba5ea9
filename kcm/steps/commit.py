"""Committing a cycle: the promotion gate, then one atomic ledger write. The new version
becomes the challenger (and the champion if the gate promotes it), the batch is processed,
the cycle's report is kept (``state/reports/<batch>.json``). Nothing here talks to MLflow or
draws: ``publish`` does that after the commit, and a failure there never touches the batch."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kcm.config import KCMConfig
from kcm.evaluation.gate import GateTolerances, decide_promotion
from kcm.failpoints import reach
from kcm.steps.systems import now
from kcm.workspace import Workspace, atomic_write_text

log = logging.getLogger(__name__)


def report_path(ws: Workspace, name: str) -> Path:
    """The whole report of the cycle of batch ``name`` (with its matrices and per-class figures)."""
    return ws.state / "reports" / f"{Path(name).stem}.json"


def commit(
    cfg: KCMConfig, ws: Workspace, name: str, version: int, report: dict[str, Any]
) -> dict[str, Any]:
    """The gate compares version ``version`` with the champion on the same held-out views;
    one atomic ledger write commits the cycle (``published: false`` until ``publish``)."""
    ledger = ws.load_ledger()
    r = cfg.registry
    tol = GateTolerances(r.accuracy_tolerance, r.few_tolerance, r.large_rate_tolerance)
    decision = decide_promotion(report, ledger.champion_report(), tol)
    report["gate"] = {
        "promote": decision.promote,
        "reasons": decision.reasons,
        "champion_version": ledger.champion,
    }
    report["plots"], report["mlflow"], report["published"] = [], None, False
    atomic_write_text(report_path(ws, name), json.dumps(report, indent=1, default=float))
    ledger.cycles.append(
        {k: v for k, v in report.items() if k not in ("matrix_state", "per_class")}
    )
    for key, state in report["matrix_state"].items():
        setattr(ledger, key, state)
    ledger.batches[name] = ledger.batches[name].model_copy(
        update={"status": "processed", "version": version, "at": now()}
    )
    ledger.challenger = version
    if decision.promote:
        ledger.champion = version
    ws.save_ledger(ledger)  # the commit point of the cycle
    reach("commit:committed")
    log.info("batch %s: %s", name, decision.summary())
    return {
        "batch": name,
        "version": version,
        "promoted": decision.promote,
        "champion": ledger.answering_version,
        "reasons": decision.reasons,
    }
