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

from kcm.config import KCMConfig, OpenAIConfig
from kcm.data.batch import OUT_OF_SCOPE_LABEL, Task
from kcm.models.cache import ResponseCache
from kcm.models.large.base import CIRCUIT_OPEN, EndpointError, Failure, LargeModel, hint_text

log = logging.getLogger(__name__)
PROMPT_VERSION = "v1"
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

    @classmethod
    def from_config(cls, cfg: KCMConfig, task: Task, cache: ResponseCache) -> LargeModel:
        model = cls(task, cfg.large.openai, cache, use_hint=cfg.large.hint)
        model.offer_out_of_scope = cfg.large.out_of_scope.offer
        return model

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
        labels = ", ".join(self.task.label_names)
        system = (
            "You are a classifier. Choose exactly one label for the input from this list: "
            f"{labels}. Reply with the label only, spelled exactly as in the list."
        )
        if self.offer_out_of_scope:
            system += f" If no label fits the input, reply {OUT_OF_SCOPE_LABEL}."
        if isinstance(item, np.ndarray):
            cols = self.task.feature_cols or tuple(f"x{i}" for i in range(len(item)))
            shown = ", ".join(f"{c}={v:.4g}" for c, v in zip(cols, item, strict=False))
        else:
            shown = str(item)
        user = f"Input: {shown}\n"
        if hint is not None and self.use_hint:
            user += (
                "A smaller model's guess (label, confidence): "
                f"{hint_text(hint, self.task.label_names, self.cfg.top_k)}. It may be wrong.\n"
            )
        return [{"role": "system", "content": system}, {"role": "user", "content": user + "Label:"}]

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

    def _one(self, item: Any, hint: np.ndarray | None) -> np.ndarray | Failure:
        out = self._request(item, hint)
        self.note(not isinstance(out, Failure))
        return out

    def _request(self, item: Any, hint: np.ndarray | None) -> np.ndarray | Failure:
        """One input: every attempt is a request the endpoint counts (``ledger.requests``);
        transport errors, retryable statuses, malformed JSON and replies outside the label set
        are retried with backoff; 401/403 fail the run (``EndpointError``)."""
        import httpx

        body = {
            "model": self.cfg.model,
            "messages": self.messages(item, hint),
            "temperature": self.cfg.temperature,
            "max_tokens": 32,
        }
        delay = self.cfg.backoff
        last = "no attempt"
        for attempt in range(self.cfg.max_retries + 1):
            if self.tripped_:
                return Failure(CIRCUIT_OPEN.format(n=self.max_consecutive_failures))
            if attempt:
                self.ledger.add(retries=1)
                time.sleep(delay)
                delay *= 2
            try:
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
                return Failure(f"HTTP {resp.status_code}: {resp.text[:200]} (not retried)")
            try:
                data = resp.json()
                reply = data["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"malformed response: {resp.text[:200]}"
                continue
            usage = data.get("usage") or {}
            self.ledger.add(
                prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
                completion_tokens=int(usage.get("completion_tokens", 0) or 0),
            )
            names = (*self.task.label_names, OUT_OF_SCOPE_LABEL)
            idx = parse_label(reply, names)
            if idx is None and self.unknown_answers != "out_of_scope":
                last = f"reply outside the label set: {reply[:120]!r}"
                continue
            return self.row_of(OUT_OF_SCOPE_LABEL if idx is None else names[idx])
        return Failure(f"failed after {self.cfg.max_retries + 1} attempt(s): {last}")

    def _answer(
        self, inputs: Sequence[Any], hints: np.ndarray | None
    ) -> list[np.ndarray | Failure]:
        hs = [None if hints is None else hints[i] for i in range(len(inputs))]
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            return list(pool.map(self._one, inputs, hs))
