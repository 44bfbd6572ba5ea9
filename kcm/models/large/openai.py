"""An OpenAI-compatible chat-completions endpoint asked to pick one label.

The small model's top-k labels and confidences go into the prompt (the paper's prompt
modification; ``large.hint: false`` turns it off). Replies are parsed robustly; a reply
outside the label set, or a request that still fails after retries with backoff, becomes a
recorded failure, never a crash and never a silent drop.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from kcm.config import KCMConfig, OpenAIConfig, RateLimitConfig
from kcm.cost import chat_tokens, count_tokens
from kcm.data.batch import OUT_OF_SCOPE_LABEL, Task
from kcm.models.cache import ResponseCache
from kcm.models.large.base import CIRCUIT_OPEN, EndpointError, Failure, LargeModel, Replies
from kcm.models.large.prompt import chat_messages
from kcm.ratelimit import RateLimiter

log = logging.getLogger(__name__)
PROMPT_VERSION = "v1"
MAX_TOKENS = 32  # a label is a few tokens: the reply never needs more
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def _norm(s: str) -> str:
    s = s.strip().lower()
    s = re.sub(r"^(label|answer|category|intent)\s*[:=-]\s*", "", s)
    s = s.strip(" \t\n\"'`*.,;:!()[]{}<>")
    return re.sub(r"[\s_\-]+", " ", s)


def parse_label(reply: str, labels: Sequence[str]) -> int | None:
    """The index of the one label the reply names, or None when it names none or several."""
    normed = {_norm(lab): i for i, lab in enumerate(labels)}
    first_line = reply.strip().splitlines()[0] if reply.strip() else ""
    for candidate in (reply, first_line):
        hit = normed.get(_norm(candidate))
        if hit is not None:
            return hit
    text = " " + _norm(reply) + " "
    found = {i for key, i in normed.items() if key and f" {key} " in text}
    # prefer the longest label when one label contains another ("card" vs "card arrival")
    if len(found) > 1:
        longest = max(found, key=lambda i: len(_norm(labels[i])))
        if all(_norm(labels[i]) in _norm(labels[longest]) for i in found):
            return longest
        return None
    return found.pop() if found else None


class OpenAIChatModel(LargeModel):
    name: ClassVar[str] = "openai"
    hint_in_request: ClassVar[bool] = True
    notes_itself: ClassVar[bool] = True  # requests run in threads: the breaker trips mid-chunk

    def __init__(
        self,
        task: Task,
        cfg: OpenAIConfig | None = None,
        cache: ResponseCache | None = None,
        use_hint: bool = True,
    ) -> None:
        super().__init__(task, cache)
        self.cfg = cfg or OpenAIConfig()
        self.use_hint = use_hint
        self.hint_top_k = self.cfg.top_k
        self.chunk_size = max(self.cfg.concurrency * 4, 8)
        self._client: Any = None
        self.offer_out_of_scope = False
        self.rate_limit = RateLimitConfig()

    @classmethod
    def from_config(cls, cfg: KCMConfig, task: Task, cache: ResponseCache) -> LargeModel:
        model = cls(task, cfg.large.openai, cache, use_hint=cfg.large.hint)
        model.offer_out_of_scope = cfg.large.out_of_scope.offer
        model.rate_limit = cfg.large.rate_limit
        return model

    def priced_model(self) -> str | None:
        return self.cfg.model

    def limiter(self) -> RateLimiter:
        r = self.rate_limit
        return RateLimiter.shared(
            f"{self.cfg.base_url}|{self.cfg.model}",
            r.requests_per_minute,
            r.tokens_per_minute,
            self.cfg.concurrency,
            self.limits_path,
        )

    def estimate(self, item: Any, hint: np.ndarray | None) -> float:
        return self.price.of(chat_tokens(self.messages(item, hint)), MAX_TOKENS)

    def expected_cost(self, item: Any) -> float:
        labels = self.task.label_names
        reply = sum(count_tokens(lab) for lab in labels) / max(len(labels), 1)
        return self.price.of(chat_tokens(self.messages(item, None)), reply)

    def fingerprint(self) -> str:
        c = self.cfg
        offer = ":offer-oos" if self.offer_out_of_scope else ""
        return (
            f"openai:{c.base_url}:{c.model}:{c.temperature}:{PROMPT_VERSION}:{self.use_hint}"
            f"{offer}{self.oos_suffix()}"
        )

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "backend": self.name,
            "base_url": c.base_url,
            "model": c.model,
            "api_key_env": c.api_key_env,
            "hint": self.use_hint,
            "top_k": c.top_k,
        }

    def messages(self, item: Any, hint: np.ndarray | None) -> list[dict[str, str]]:
        shown = hint if self.use_hint else None
        return chat_messages(self.task, item, shown, self.cfg.top_k, self.offer_out_of_scope)

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {"Content-Type": "application/json"}
            key = os.environ.get(self.cfg.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            else:
                log.warning("no API key in $%s; sending requests without one", self.cfg.api_key_env)
            self._client = httpx.Client(
                base_url=self.cfg.base_url.rstrip("/"), headers=headers, timeout=self.cfg.timeout
            )
        return self._client

    def _one(self, item: Any, hint: np.ndarray | None) -> tuple[np.ndarray | Failure, float]:
        out, cost = self._request(item, hint)
        self.note(not isinstance(out, Failure))
        return out, cost

    def _paid(self, messages: list[dict[str, str]], reply: str, usage: dict[str, Any]) -> float:
        """Count a response's tokens (the endpoint's usage, else counted: estimated) and
        return its price."""
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if prompt is None or completion is None:
            prompt, completion = chat_tokens(messages), count_tokens(reply)
            self.ledger.add(estimated_tokens=1)
        self.ledger.add(prompt_tokens=int(prompt or 0), completion_tokens=int(completion or 0))
        return self.price.of(int(prompt or 0), int(completion or 0))

    def _wait(self, resp: Any, delay: float) -> float:
        """Before the next attempt: a 429's Retry-After holds every caller of the endpoint
        (capped at ``large.rate_limit.max_wait``); otherwise this attempt backs off."""
        after = resp.headers.get("retry-after") if resp is not None else None
        try:
            seconds = float(after) if after is not None else None
        except ValueError:
            seconds = None
        if seconds is not None and resp.status_code == 429:
            wait = min(seconds, self.rate_limit.max_wait)
            if wait >= 5:
                log.warning("the endpoint is rate-limiting: every request waits %.0f s", wait)
            self.limiter().pause(wait)
            return 0.0
        return delay

    def _request(self, item: Any, hint: np.ndarray | None) -> tuple[np.ndarray | Failure, float]:
        """One input and what it cost: every attempt is a request the endpoint counts
        (``ledger.requests``), paced by the rate limiter; transport errors, retryable
        statuses, malformed JSON and replies outside the label set are retried with backoff
        (a 429's Retry-After instead); 401/403 fail the run (``EndpointError``)."""
        import httpx

        messages = self.messages(item, hint)
        body = {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": MAX_TOKENS,
        }
        want = chat_tokens(messages) + MAX_TOKENS if self.rate_limit.tokens_per_minute else 0
        delay = self.cfg.backoff
        last, cost, resp = "no attempt", 0.0, None
        limiter = self.limiter()
        for attempt in range(self.cfg.max_retries + 1):
            if self.tripped_:
                return Failure(CIRCUIT_OPEN.format(n=self.max_consecutive_failures)), cost
            if attempt:
                self.ledger.add(retries=1)
                time.sleep(self._wait(resp, delay))
                delay *= 2
            resp = None
            try:
                self.ledger.add(wait_s=limiter.acquire(want))
                with limiter.slot():
                    resp = self._http().post("/chat/completions", json=body)
            except httpx.ConnectError as err:  # never reached the endpoint: not a request
                last = f"{type(err).__name__}: {err} (is {self.cfg.base_url} reachable?)"
                continue
            except httpx.HTTPError as err:  # sent, then timed out or cut: the endpoint saw it
                self.ledger.add(requests=1)
                last = f"{type(err).__name__}: {err} (is {self.cfg.base_url} reachable?)"
                continue
            self.ledger.add(requests=1)
            if resp.status_code in (401, 403):
                raise EndpointError(
                    f"HTTP {resp.status_code} from {self.cfg.base_url}: the endpoint refused "
                    f"the credentials; put a valid key in ${self.cfg.api_key_env}"
                )
            if resp.status_code in _RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                return Failure(f"HTTP {resp.status_code}: {resp.text[:200]} (not retried)"), cost
            try:
                data = resp.json()
                reply = data["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"malformed response: {resp.text[:200]}"
                continue
            cost += self._paid(messages, reply, data.get("usage") or {})
            names = (*self.task.label_names, OUT_OF_SCOPE_LABEL)
            idx = parse_label(reply, names)
            if idx is None and self.unknown_answers != "out_of_scope":
                last = f"reply outside the label set: {reply[:120]!r}"
                continue
            return self.row_of(OUT_OF_SCOPE_LABEL if idx is None else names[idx]), cost
        return Failure(f"failed after {self.cfg.max_retries + 1} attempt(s): {last}"), cost

    def _answer(
        self, inputs: Sequence[Any], hints: np.ndarray | None
    ) -> list[np.ndarray | Failure]:
        hs = [None if hints is None else hints[i] for i in range(len(inputs))]
        hook = self.answered_hook

        def one(j: int) -> tuple[np.ndarray | Failure, float]:
            row, cost = self._one(inputs[j], hs[j])
            if hook is not None:  # stored as it arrives: a kill never pays for it again
                hook(j, row)
            return row, cost

        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            done = list(pool.map(one, range(len(inputs))))
        return Replies([row for row, _ in done], [c for _, c in done])
