"""A real OpenAI-compatible HTTP server on loopback for tests (chat completions only).

It answers with the first label whose name occurs in the user's input, in a messy format
("Label: 'x'."), records every request, and can be told to fail the first N requests with
HTTP 503 or to reply with something outside the label set; or to answer every request
with one status (e.g. 401, 500), with a body that is not JSON, or only after a delay (hung).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LLMServer:
    def __init__(
        self,
        labels: list[str],
        fail_first: int = 0,
        nonsense: bool = False,
        status: int | None = None,
        garbage: bool = False,
        hang: float = 0.0,
    ) -> None:
        self.labels = labels
        self.fail_first = fail_first
        self.nonsense = nonsense
        self.status = status
        self.garbage = garbage
        self.hang = hang
        self.requests: list[dict[str, Any]] = []
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
                self._send(
                    200,
                    {
                        "choices": [{"message": {"role": "assistant", "content": reply}}],
                        "usage": {"prompt_tokens": 20, "completion_tokens": 3},
                    },
                )

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # a client that gave up (a timeout) is what a hung server sees
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> LLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
