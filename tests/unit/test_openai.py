from __future__ import annotations

import numpy as np
import pytest

from kcm.config import OpenAIConfig
from kcm.data.batch import Task
from kcm.models.large.base import EndpointError
from kcm.models.large.openai import OpenAIChatModel, parse_label
from tests.llm_server import LLMServer

LABELS = ["card_arrival", "card_linking", "exchange_rate", "card"]
TASK = Task(kind="text", label_names=tuple(LABELS), text_col="text")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("card_arrival", 0),
        ("  Card Arrival.  ", 0),
        ("Label: 'exchange_rate'", 2),
        ("The answer is card_linking", 1),
        ("`card`", 3),
        ("card arrival\nbecause the user waits", 0),
        ("no idea", None),
        ("card_arrival or exchange_rate", None),
        ("", None),
    ],
)
def test_parse_label(reply: str, expected: int | None) -> None:
    assert parse_label(reply, LABELS) == expected


def test_prompt_carries_the_hint_and_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-test")
    with LLMServer(LABELS) as srv:
        m = OpenAIChatModel(
            TASK, OpenAIConfig(base_url=srv.base_url, api_key_env="MY_KEY", top_k=2)
        )
        hint = np.array([[0.1, 0.7, 0.15, 0.05]])
        out = m.predict_proba(["where is my exchange_rate"], hint)
        assert out.ok.all() and out.raw[0].argmax() == 2
        user = srv.requests[0]["body"]["messages"][-1]["content"]
        assert "card_linking (0.70); exchange_rate (0.15)" in user
        assert srv.requests[0]["auth"] == "Bearer sk-test"
        assert m.ledger.prompt_tokens == srv.billed["prompt_tokens"] > 0  # the endpoint's usage
        assert m.ledger.completion_tokens == srv.billed["completion_tokens"] > 0
        no_hint = OpenAIChatModel(TASK, OpenAIConfig(base_url=srv.base_url), use_hint=False)
        no_hint.predict_proba(["where is my card"], hint)
        assert "smaller model" not in srv.requests[-1]["body"]["messages"][-1]["content"]


def test_transient_errors_are_retried() -> None:
    with LLMServer(LABELS, fail_first=2) as srv:
        m = OpenAIChatModel(TASK, OpenAIConfig(base_url=srv.base_url, backoff=0.01, concurrency=1))
        out = m.predict_proba(["card_arrival please"])
        assert out.ok.all() and m.ledger.retries == 2 and m.ledger.failures == 0


def test_reply_outside_label_set_is_a_recorded_failure() -> None:
    with LLMServer(LABELS, nonsense=True) as srv:
        m = OpenAIChatModel(TASK, OpenAIConfig(base_url=srv.base_url))
        out = m.predict_proba(["a", "b"])
        assert not out.ok.any() and np.isnan(out.raw).all()
        assert m.ledger.failures == 2
        assert "outside the label set" in m.ledger.failed[0]["error"]
        # retried like any other bad reply: every attempt reached the server and is counted
        assert len(srv.requests) == 2 * (m.cfg.max_retries + 1) == m.ledger.requests
        m.predict_proba(["a"])  # failures are not cached: asked again
        assert m.ledger.calls == 3


def test_unreachable_endpoint_is_retried_then_recorded() -> None:
    m = OpenAIChatModel(
        TASK, OpenAIConfig(base_url="http://127.0.0.1:9/v1", max_retries=2, backoff=0.01, timeout=2)
    )
    out = m.predict_proba(["hello"])
    assert not out.ok.any()
    assert m.ledger.retries == 2 and m.ledger.failures == 1
    assert "reachable" in m.ledger.failed[0]["error"]


def _model(srv: LLMServer, breaker: int = 0, **cfg) -> OpenAIChatModel:
    m = OpenAIChatModel(TASK, OpenAIConfig(base_url=srv.base_url, backoff=0.01, **cfg))
    m.max_consecutive_failures = breaker
    return m


def test_every_request_the_endpoint_receives_is_counted_with_threads_and_retries() -> None:
    inputs = [f"card_arrival {i % 7}" for i in range(40)]  # 7 distinct inputs, sent once each
    with LLMServer(LABELS, fail_first=5) as srv:
        m = _model(srv, concurrency=4)
        out = m.predict_proba(inputs)
        assert out.ok.all()
        assert m.ledger.requests == len(srv.requests) == 7 + 5
        assert m.ledger.retries == 5 and m.ledger.calls == 7


def test_invalid_json_is_retried_then_recorded() -> None:
    with LLMServer(LABELS, garbage=True) as srv:
        m = _model(srv, max_retries=2)
        out = m.predict_proba(["card"])
        assert not out.ok.any() and len(srv.requests) == 3 == m.ledger.requests
        assert "malformed response" in m.ledger.failed[0]["error"]


def test_a_refused_key_fails_the_call_and_names_the_fix() -> None:
    with LLMServer(LABELS, status=401) as srv:
        m = _model(srv, api_key_env="KCM_TEST_KEY")
        with pytest.raises(EndpointError, match=r"HTTP 401 .*\$KCM_TEST_KEY"):
            m.predict_proba(["card"])


@pytest.mark.parametrize("fault", [{"status": 500}, {"hang": 1.0}])
def test_the_circuit_breaker_stops_calling_a_failing_endpoint(fault: dict) -> None:
    """An endpoint that answers 500 to everything, or hangs past the timeout: after the
    breaker's consecutive failures nothing more is sent in the call."""
    inputs = [f"card {i}" for i in range(60)]
    with LLMServer(LABELS, **fault) as srv:
        m = _model(srv, breaker=4, concurrency=4, max_retries=1, timeout=0.2)
        out = m.predict_proba(inputs)
        assert not out.ok.any() and m.ledger.circuit_open == 1
        sent = len(srv.requests)
        assert m.ledger.requests == sent <= 2 * 2 * 4  # at most two waves of 4 threads
        assert m.ledger.skipped >= 60 - 2 * m.chunk_size
        assert m.ledger.failures == 60


def test_out_of_scope_is_offered_and_understood() -> None:
    with LLMServer([*LABELS, "out_of_scope"]) as srv:
        m = OpenAIChatModel(TASK, OpenAIConfig(base_url=srv.base_url, concurrency=1))
        plain = m.fingerprint()
        m.offer_out_of_scope = True
        assert m.fingerprint() != plain, "another prompt must not share the answer cache"
        out = m.predict_proba(["out_of_scope: what is the weather", "card_linking help"])
        assert (
            "If no label fits the input, reply out_of_scope"
            in (srv.requests[0]["body"]["messages"][0]["content"])
        )
        assert out.ok.all() and out.oos().tolist() == [True, False]
        assert m.ledger.requests == 2 and m.ledger.failures == 0


def test_a_reply_naming_no_label_is_out_of_scope_when_configured() -> None:
    with LLMServer(LABELS, nonsense=True) as srv:
        m = OpenAIChatModel(TASK, OpenAIConfig(base_url=srv.base_url, concurrency=1))
        m.unknown_answers = "out_of_scope"
        out = m.predict_proba(["anything"])
        assert out.ok.all() and out.oos().tolist() == [True]
        assert len(srv.requests) == 1, "an answer, so not retried"
