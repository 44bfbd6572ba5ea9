"""The outcomes a team acts on, decided once for both drivers' runners, and the workspace's
own record of them (``state/events.jsonl``, one JSON object per line). The flows also send
each one to Prefect as an event (``flows/events.py``), so an automation can react to it.

| event | when | payload |
|---|---|---|
| ``kcm.batch.quarantined`` | a batch failed validation, or its cycle failed ``flow.max_attempts`` times | batch, reason, report |
| ``kcm.challenger.refused`` | the promotion gate kept the champion | batch, version, model_version, reasons, traffic accuracy and large-call rate |
| ``kcm.forgetting.few`` | forgetting on the Few group went above ``eval.forgetting_few_alarm`` | batch, forgetting_few, bound |
| ``kcm.endpoint.down`` | the large model's circuit opened (the small model answered) | batches |
| ``kcm.drift`` | the batch's drift score went above ``eval.drift_alarm`` | batch, score, bound, mean C_x of batch and reference |
| ``kcm.budget.exhausted`` | the serving spend cap refused calls (the small model answered them), or batches wait for budget | batches, waiting, spent (run, day), per_run, per_day |
| ``kcm.environment.fault`` | a resource around the run failed (disk, store, MLflow, DVC, endpoint); the batch waits | batch, step, resource, error |
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from kcm.config import KCMConfig
from kcm.workspace import Workspace

EVENTS = {
    "quarantined": "kcm.batch.quarantined",
    "refused": "kcm.challenger.refused",
    "forgetting_few": "kcm.forgetting.few",
    "endpoint_down": "kcm.endpoint.down",
    "drift": "kcm.drift",
    "environment": "kcm.environment.fault",
    "budget_exhausted": "kcm.budget.exhausted",
}


def event_name(kind: str) -> str:
    if kind not in EVENTS:
        raise ValueError(f"event kind {kind!r}: choose from {', '.join(EVENTS)}")
    return EVENTS[kind]


def record(ws: Workspace, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Append the event to ``state/events.jsonl`` (one line, flushed and fsynced)."""
    line = {"event": event_name(kind), "at": datetime.now(UTC).isoformat(), **payload}
    ws.state.mkdir(parents=True, exist_ok=True)
    with open(ws.state / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return line


def recorded(ws: Workspace) -> list[dict[str, Any]]:
    """Every event the workspace recorded, oldest first (a torn last line is skipped)."""
    path = ws.state / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return out


def after_cycle(
    cfg: KCMConfig, report: dict[str, Any], committed: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """The events a processed cycle calls for: drift, a refused challenger, Few forgetting."""
    out: list[tuple[str, dict[str, Any]]] = []
    batch = report["batch"]
    drift = report.get("drift")
    if drift and drift.get("alarm"):
        out.append(("drift", {"batch": batch, **drift}))
    if not committed["promoted"]:
        t = report.get("traffic") or {}
        out.append(
            (
                "refused",
                {
                    "batch": batch,
                    "version": committed["version"],
                    "model_version": (committed.get("mlflow") or {}).get("model_version"),
                    "reasons": committed["reasons"],
                    "traffic_accuracy": t.get("accuracy"),
                    "large_call_rate": t.get("large_call_rate"),
                },
            )
        )
    few = (report.get("forgetting") or {}).get("forgetting_few")
    if few is not None and few > cfg.eval.forgetting_few_alarm:
        out.append(
            (
                "forgetting_few",
                {"batch": batch, "forgetting_few": few, "bound": cfg.eval.forgetting_few_alarm},
            )
        )
    return out
