"""kcm's events (``kcm.events``: what they are and when) sent to Prefect with
``emit_event``, so that an automation can react to them (docs/operations.md has an example).

Each event's resource is the workspace (``kcm.workspace.<id>``, named after its folder, with
its path, dataset, project and model name as labels), so one automation trigger can match a project.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from kcm import project
from kcm.config import KCMConfig
from kcm.events import event_name
from kcm.workspace import Workspace


def resource(c: KCMConfig, ws: Workspace) -> dict[str, str]:
    names = project.names(c, ws)
    return {
        "prefect.resource.id": f"kcm.workspace.{ws.load_ledger().workspace_id}",
        "prefect.resource.name": ws.root.name,
        "kcm.workspace": str(ws.root),
        "kcm.dataset": str(c.data.dataset),
        "kcm.project": names["project"],
        "kcm.model": names["model"],
    }


def emit(c: KCMConfig, ws: Workspace, kind: str, **payload: Any) -> None:
    """Send one of kcm's events (``kcm.events.EVENTS``) to Prefect."""
    emit_event(event=event_name(kind), resource=resource(c, ws), payload=payload)


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
