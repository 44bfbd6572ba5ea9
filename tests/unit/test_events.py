"""kcm's events: which a cycle calls for, the workspace's record, the Prefect payloads and the
example automation (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows import events
from kcm import events as kcm_events
from kcm.config import load_config
from kcm.workspace import Workspace


class _Ws:
    root = Path("/p/proj")

    def load_ledger(self) -> Any:
        return type("L", (), {"workspace_id": "abc", "project": "proj", "model_name": None})()

    def exists(self) -> bool:
        return True


def test_a_cycle_calls_for_refusal_and_few_forgetting_only_when_due(monkeypatch: Any) -> None:
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
    assert kcm_events.after_cycle(c, report, {"promoted": True, "version": 2, "reasons": []}) == []
    report["forgetting"]["forgetting_few"] = 0.2
    due = kcm_events.after_cycle(
        c, report, {"promoted": False, "version": 2, "reasons": ["Few dropped"]}
    )
    for kind, payload in due:
        events.emit(c, ws, kind, **payload)
    assert [e for e, _, _ in sent] == ["kcm.challenger.refused", "kcm.forgetting.few"]
    _, resource, refused = sent[0]
    assert resource["prefect.resource.id"] == "kcm.workspace.abc"
    assert resource["kcm.project"] == "proj" and resource["kcm.model"] == "proj-digits"
    assert refused["reasons"] == ["Few dropped"] and refused["traffic_accuracy"] == 0.9
    assert sent[1][2] == {"batch": "b1", "forgetting_few": 0.2, "bound": 0.05}
    with pytest.raises(ValueError, match="choose from"):
        events.emit(c, ws, "drifted")


def test_the_workspace_records_its_events_one_json_line_each(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    kcm_events.record(ws, "quarantined", {"batch": "b1", "reason": "bad"})
    kcm_events.record(ws, "drift", {"batch": "b2", "score": 0.4})
    with open(ws.state / "events.jsonl", "a") as fh:
        fh.write('{"event": "kcm.dri')  # a line torn by a kill is skipped
    got = kcm_events.recorded(ws)
    assert [e["event"] for e in got] == ["kcm.batch.quarantined", "kcm.drift"]
    assert got[0]["reason"] == "bad" and "at" in got[0]
    with pytest.raises(ValueError, match="choose from"):
        kcm_events.record(ws, "nope", {})


def test_the_example_automation_is_a_valid_prefect_automation() -> None:
    a = events.example_automation("00000000-0000-0000-0000-000000000000")
    assert a.trigger.expect == {"kcm.batch.quarantined"}
    assert a.actions[0].deployment_id is not None
