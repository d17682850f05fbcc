"""A local HTTP server that speaks the OpenAI chat-completions, Anthropic messages and Gemini
streamGenerateContent streaming formats (server-sent events), so the official SDKs run their
real network path.

Each request takes the next scripted behaviour: stream these text pieces, answer with an
HTTP error status, or stall past the client's timeout. Requests are recorded for asserts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Behaviour:
    def __init__(
        self, pieces: list[str] | None = None, status: int = 200, stall: float = 0.0
    ) -> None:
        self.pieces, self.status, self.stall = pieces or [], status, stall


def stream(*pieces: str) -> Behaviour:
    return Behaviour(list(pieces))


def error(status: int) -> Behaviour:
    return Behaviour(status=status)


def stall(seconds: float) -> Behaviour:
    return Behaviour(stall=seconds)


class FakeLLMServer:
    def __init__(self) -> None:
        self.script: list[Behaviour] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def next(self) -> Behaviour:
        with self._lock:
            if not self.script:
                return Behaviour(status=500)
            return self.script.pop(0)


def _openai_events(pieces: list[str]) -> Iterator[str]:
    base = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-model",
    }
    first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    yield f"data: {json.dumps({**base, 'choices': [first]})}\n\n"
    for piece in pieces:
        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
        yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    yield f"data: {json.dumps({**base, 'choices': [last]})}\n\n"
    yield "data: [DONE]\n\n"


def _anthropic_events(pieces: list[str]) -> Iterator[str]:
    def event(kind: str, data: dict[str, Any]) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

    usage = {"input_tokens": 1, "output_tokens": 1}
    yield event(
        "message_start",
        {
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "fake-model",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            }
        },
    )
    yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    yield event("ping", {})
    for piece in pieces:
        yield event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}
        )
    yield event("content_block_stop", {"index": 0})
    yield event(
        "message_delta",
        {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": len(pieces)},
        },
    )
    yield event("message_stop", {})


def _gemini_events(pieces: list[str]) -> Iterator[str]:
    def chunk(part: dict[str, Any], finish: str | None = None) -> str:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        data = {
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 2},
            "modelVersion": "fake-model",
        }
        return f"data: {json.dumps(data)}\r\n\r\n"

    # A thinking model's thought comes first, marked as one: it is not part of the reply.
    yield chunk({"text": "Let me think.", "thought": True})
    for piece in pieces:
        yield chunk({"text": piece})
    yield chunk({"text": ""}, finish="STOP")


def _error_payload(api: str, status: int) -> dict[str, Any]:
    if api == "anthropic":
        return {"type": "error", "error": {"type": "api_error", "message": "scripted"}}
    if api == "gemini":
        return {"error": {"code": status, "message": "scripted", "status": "UNAVAILABLE"}}
    return {"error": {"message": "scripted", "type": "api_error"}}


def _api(path: str) -> str:
    """Which API a request's path belongs to."""
    if ":streamGenerateContent" in path:
        return "gemini"
    if path.endswith("/messages"):
        return "anthropic"
    return "openai"


EVENTS = {"openai": _openai_events, "anthropic": _anthropic_events, "gemini": _gemini_events}


def _handler(fake: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            fake.requests.append(
                {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            )
            behaviour = fake.next()
            if behaviour.stall:
                time.sleep(behaviour.stall)
                return
            api = _api(self.path)
            if behaviour.status != 200:
                data = json.dumps(_error_payload(api, behaviour.status)).encode()
                self.send_response(behaviour.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("retry-after-ms", "5")  # keeps the SDKs' backoff short
                self.end_headers()
                self.wfile.write(data)
                return
            events = EVENTS[api]
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            for chunk in events(behaviour.pieces):
                self.wfile.write(chunk.encode())
                self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def serving() -> Iterator[tuple[FakeLLMServer, str]]:
    """A fake server on a free loopback port, and its base URL."""
    fake = FakeLLMServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
