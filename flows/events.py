"""Prefect events for the outcomes a team acts on, so that an automation can react to them
(Prefect's ``emit_event``; see the README for an example automation).

| event | when | payload |
|---|---|---|
| ``kcm.batch.quarantined`` | a batch failed validation, or its cycle failed ``flow.max_attempts`` times | batch, reason, report |
| ``kcm.challenger.refused`` | the promotion gate kept the champion | batch, version, model_version, reasons, traffic accuracy and large-call rate |
| ``kcm.forgetting.few`` | forgetting on the Few group went above ``eval.forgetting_few_alarm`` | batch, forgetting_few, bound |
| ``kcm.endpoint.down`` | the large model's circuit opened (the small model answered) | batches |
| ``kcm.drift`` | the batch's drift score went above ``eval.drift_alarm`` | batch, score, bound, mean C_x of batch and reference |

Each event's resource is the workspace (``kcm.workspace.<id>``, named after its folder, with
its path, dataset and model name as labels), so one automation trigger can match a project.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from kcm.config import KCMConfig
from kcm.workspace import Workspace

EVENTS = {
    "quarantined": "kcm.batch.quarantined",
    "refused": "kcm.challenger.refused",
    "forgetting_few": "kcm.forgetting.few",
    "endpoint_down": "kcm.endpoint.down",
    "drift": "kcm.drift",
}


def resource(c: KCMConfig, ws: Workspace) -> dict[str, str]:
    return {
        "prefect.resource.id": f"kcm.workspace.{ws.load_ledger().workspace_id}",
        "prefect.resource.name": ws.root.name,
        "kcm.workspace": str(ws.root),
        "kcm.dataset": str(c.data.dataset),
        "kcm.model": c.registry.model_name,
    }


def emit(c: KCMConfig, ws: Workspace, kind: str, **payload: Any) -> None:
    if kind not in EVENTS:
        raise ValueError(f"event kind {kind!r}: choose from {', '.join(EVENTS)}")
    emit_event(event=EVENTS[kind], resource=resource(c, ws), payload=payload)


def after_cycle(
    c: KCMConfig, ws: Workspace, report: dict[str, Any], registered: dict[str, Any]
) -> None:
    """The events a processed cycle calls for: drift, a refused challenger, Few forgetting."""
    batch = report["batch"]
    drift = report.get("drift")
    if drift and drift.get("alarm"):
        emit(c, ws, "drift", batch=batch, **drift)
    if not registered["promoted"]:
        t = report.get("traffic") or {}
        emit(
            c,
            ws,
            "refused",
            batch=batch,
            version=registered["version"],
            model_version=(registered.get("mlflow") or {}).get("model_version"),
            reasons=registered["reasons"],
            traffic_accuracy=t.get("accuracy"),
            large_call_rate=t.get("large_call_rate"),
        )
    few = (report.get("forgetting") or {}).get("forgetting_few")
    if few is not None and few > c.eval.forgetting_few_alarm:
        emit(
            c,
            ws,
            "forgetting_few",
            batch=batch,
            forgetting_few=few,
            bound=c.eval.forgetting_few_alarm,
        )


def example_automation(deployment_id: str, event: str = "kcm.batch.quarantined") -> Any:
    """An automation a team can start from (``.create()`` registers it with the Prefect API):
    whenever any kcm workspace emits ``event``, run the deployment ``deployment_id`` (e.g. a
    notifier flow, or kcm-continual itself to process what arrived behind the batch). Swap
    the action for ``SendNotification`` / ``CallWebhook`` to page someone instead."""
    from prefect.automations import Automation
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name=f"kcm: {event} -> run deployment {deployment_id}",
        trigger=EventTrigger(
            expect={event},
            match={"prefect.resource.id": "kcm.workspace.*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[RunDeployment(source="selected", deployment_id=deployment_id, parameters={})],
    )
