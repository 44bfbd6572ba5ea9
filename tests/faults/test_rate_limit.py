"""The fault suite: a rate-limited endpoint (issue #24). Against a local endpoint that
answers HTTP 429 beyond N requests per window, kcm's client-side limiter keeps under the
limit (no 429 storm) at close to the allowed throughput, and without a limiter configured the
endpoint's Retry-After is honoured by every thread, so no request fails."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kcm.config import OpenAIConfig, RateLimitConfig
from kcm.data.batch import Task
from kcm.models.large.openai import OpenAIChatModel
from tests.llm_server import LLMServer

pytestmark = pytest.mark.slow

FRUIT = ["apple", "banana", "cherry"]


def _model(url: str, rpm: float | None, retries: int = 3) -> OpenAIChatModel:
    task = Task(kind="text", label_names=tuple(FRUIT), text_col="text")
    m = OpenAIChatModel(
        task, OpenAIConfig(base_url=url, concurrency=4, max_retries=retries, backoff=0.01)
    )
    m.rate_limit = RateLimitConfig(requests_per_minute=rpm)
    return m


def test_the_limiter_keeps_under_the_limit_at_close_to_the_allowed_throughput() -> None:
    n, window = 20, 2.0  # 600 requests a minute
    inputs = [f"an apple number {i}" for i in range(60)]
    with LLMServer(FRUIT, rate_limit=(n, window)) as srv:
        m = _model(srv.base_url, rpm=60.0 * n / window)
        t0 = time.monotonic()
        out = m.predict_proba(inputs, np.full((len(inputs), 3), 1 / 3))
        elapsed = time.monotonic() - t0
        throttled = srv.throttled
    assert out.ok.all() and m.ledger.failures == 0
    # no 429 storm: at most a request the network's jitter bunched into a window, retried
    assert throttled <= 2, f"{throttled} requests were refused with 429"
    allowed = n / window  # requests per second
    # the first request goes at once: 60 requests need 59 intervals
    assert (len(inputs) - 1) / elapsed >= 0.8 * allowed, f"{len(inputs) / elapsed:.1f}/s"
    assert m.ledger.wait_s > 0


def test_without_a_limiter_retry_after_is_honoured_and_nothing_fails() -> None:
    inputs = [f"a banana number {i}" for i in range(24)]
    with LLMServer(FRUIT, rate_limit=(6, 1.0)) as srv:
        m = _model(srv.base_url, rpm=None, retries=10)
        out = m.predict_proba(inputs, np.full((len(inputs), 3), 1 / 3))
        throttled, answered = srv.throttled, srv.billed["answered"]
    assert out.ok.all() and m.ledger.failures == 0 and answered == len(inputs)
    # every 429 paused every thread until the window freed: no storm of retries
    assert throttled <= len(inputs), f"{throttled} 429s for {len(inputs)} requests"
    assert m.ledger.requests == answered + throttled
