"""kcm's Prefect events: names, payloads and the example automation (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows import events
from kcm.config import load_config
from kcm.workspace import Workspace


class _Ws:
    root = Path("/p/proj")

    def load_ledger(self) -> Any:
        return type("L", (), {"workspace_id": "abc"})()


def test_after_cycle_emits_refusal_and_few_forgetting_only_when_due(monkeypatch: Any) -> None:
    sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    monkeypatch.setattr(
        events,
        "emit_event",
        lambda event, resource, payload: sent.append((event, resource, payload)),
    )
    c = load_config(None, ["eval.forgetting_few_alarm=0.05"])
    ws: Workspace = _Ws()  # type: ignore[assignment]
    report = {
        "batch": "b1",
        "traffic": {"accuracy": 0.9, "large_call_rate": 0.3},
        "forgetting": {"forgetting_few": 0.01},
    }
    events.after_cycle(c, ws, report, {"promoted": True, "version": 2, "reasons": []})
    assert sent == []
    report["forgetting"]["forgetting_few"] = 0.2
    events.after_cycle(c, ws, report, {"promoted": False, "version": 2, "reasons": ["Few dropped"]})
    assert [e for e, _, _ in sent] == ["kcm.challenger.refused", "kcm.forgetting.few"]
    _, resource, refused = sent[0]
    assert resource["prefect.resource.id"] == "kcm.workspace.abc"
    assert resource["kcm.model"] == c.registry.model_name
    assert refused["reasons"] == ["Few dropped"] and refused["traffic_accuracy"] == 0.9
    assert sent[1][2] == {"batch": "b1", "forgetting_few": 0.2, "bound": 0.05}
    with pytest.raises(ValueError, match="choose from"):
        events.emit(c, ws, "drifted")


def test_the_example_automation_is_a_valid_prefect_automation() -> None:
    a = events.example_automation("00000000-0000-0000-0000-000000000000")
    assert a.trigger.expect == {"kcm.batch.quarantined"}
    assert a.actions[0].deployment_id is not None
