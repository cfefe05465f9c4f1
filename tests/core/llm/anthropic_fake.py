"""A small local server speaking Anthropic's Messages API wire format (the real one is a paid outside service).

It enforces the rules the mapping must follow (key and version headers,
`max_tokens`, system prompt as a top-level field, roles alternating from
`user`) and answers 400 `invalid_request_error` otherwise, as the real API
does. Answers are "You said: <last user text>" with usage counted in words,
as JSON or as the SSE event sequence message_start, content_block_start, ping,
content_block_delta..., content_block_stop, message_delta, message_stop.
`fail_with` makes the next calls fail with that HTTP status; `break_stream`
sends an `error` event after the first delta.
"""
from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

API_KEY = "sk-ant-test-key"
MAX_OUTPUT = 8192


@dataclass
class FakeAnthropic:
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_with: int | None = None
    break_stream: bool = False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        return self.handle(request)(environ, start_response)

    def handle(self, request: Request) -> Response:
        if request.path != "/v1/messages" or request.method != "POST":
            return _error(404, "not_found_error", f"no route {request.path}")
        self.headers.append(dict(request.headers))
        # SDK releases differ in where the key goes: `x-api-key`, or a bearer token.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if API_KEY not in (request.headers.get("x-api-key"), bearer):
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        body = request.get_json()
        self.received.append(body)
        problem = _check(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        if self.fail_with:
            kind = "overloaded_error" if self.fail_with == 529 else "api_error"
            return _error(self.fail_with, kind, "try again later")
        last = next(m for m in reversed(body["messages"]) if m["role"] == "user")
        words = f"You said: {_text(last['content'])}".split()
        words = words[: body["max_tokens"]]
        prompt_tokens = sum(len(_text(m["content"]).split()) for m in body["messages"])
        prompt_tokens += len(str(body.get("system", "")).split())
        stop = "max_tokens" if len(words) == body["max_tokens"] else "end_turn"
        if not body.get("stream"):
            return Response(json.dumps({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": " ".join(words)}], "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": len(words)}}),
                content_type="application/json")
        return Response(self._events(body, words, prompt_tokens, stop), content_type="text/event-stream")

    def _events(self, body: dict[str, Any], words: list[str], prompt_tokens: int, stop: str) -> Iterator[str]:
        yield _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}})
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        yield _sse("ping", {"type": "ping"})
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": text}})
            if self.break_stream:
                yield _sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                return
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": len(words)}})
        yield _sse("message_stop", {"type": "message_stop"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content)


def _check(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    if body["max_tokens"] > MAX_OUTPUT:
        return f"max_tokens: {body['max_tokens']} > {MAX_OUTPUT}, which is the maximum allowed for this model"
    if "temperature" in body and not 0 <= body["temperature"] <= 1:
        return "temperature: must be between 0 and 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if not _text(message.get("content", "")).strip():
            return f"messages.{i}: text content blocks must be non-empty"
        if i and message["role"] == messages[i - 1]["role"]:
            return "messages: roles must alternate between 'user' and 'assistant'"
    if messages[0]["role"] != "user":
        return "messages: first message must use the 'user' role"
    if "system" in body and not isinstance(body["system"], (str, list)):
        return "system: must be a string or a list of text blocks"
    return None


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _error(status: int, kind: str, message: str) -> Response:
    return Response(json.dumps({"type": "error", "error": {"type": kind, "message": message}}), status=status,
                    content_type="application/json")


@contextlib.contextmanager
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    server = make_server("127.0.0.1", 0, fake, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="fake-anthropic", daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
