"""OpenAI's wire format: completion and chunk objects, model lists and error bodies.

Everything the OpenAI-compatible routes send is shaped here, so `openai`
clients (the official SDKs, LangChain, LlamaIndex...) see exactly what they
would get from api.openai.com:

- `chat.completion` objects, `chat.completion.chunk` objects for streams (the
  first chunk carries `delta.role`, the last one `finish_reason`; with
  `stream_options.include_usage` every chunk has `"usage": null` and one more
  chunk with `choices: []` carries the usage), then `data: [DONE]`;
- errors as `{"error": {"message", "type", "param", "code"}}`, also sent in-band
  as a `data:` line when a stream fails after it started (no `[DONE]` follows,
  so a client cannot mistake a cut-off answer for a finished one).
"""
from __future__ import annotations

import time
from typing import Any

from werkzeug.exceptions import HTTPException

from app.errors import ApiError, flatten_messages
from app.ids import new_id
from app.json_encoding import dumps_compact
from app.llm import ChatResult, Usage

DONE = "data: [DONE]\n\n"
FINISH_REASONS = ("stop", "length", "content_filter", "tool_calls")


def completion_id() -> str:
    return "chatcmpl-" + new_id("c")[2:]


def created_now() -> int:
    return int(time.time())


def finish_reason(value: str | None) -> str:
    return value if value in FINISH_REASONS else "stop"


def usage_object(usage: Usage) -> dict[str, int]:
    return usage.as_dict()


def completion(result: ChatResult, *, id: str | None = None, created: int | None = None) -> dict[str, Any]:
    """A `chat.completion` object for a finished (non-streamed) chat."""
    return {
        "id": id or completion_id(),
        "object": "chat.completion",
        "created": created if created is not None else created_now(),
        "model": result.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": result.content, "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason(result.finish_reason),
        }],
        "usage": usage_object(result.usage),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """The `data:` lines of one streamed completion, in OpenAI's order."""

    def __init__(self, model: str, *, include_usage: bool, id: str | None = None, created: int | None = None):
        self.id = id or completion_id()
        self.created = created if created is not None else created_now()
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]], usage: Any = None) -> str:
        body: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                "model": self.model, "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            body["usage"] = usage
        return _data(body)

    @staticmethod
    def _choice(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def first(self) -> str:
        """The opening chunk: the role and no text yet (as OpenAI sends it)."""
        return self._chunk([self._choice({"role": "assistant", "content": ""})])

    def delta(self, text: str) -> str:
        return self._chunk([self._choice({"content": text})])

    def finish(self, reason: str | None) -> str:
        return self._chunk([self._choice({}, finish_reason(reason))])

    def usage(self, usage: Usage) -> str:
        """The extra last chunk of `stream_options.include_usage`."""
        return self._chunk([], usage_object(usage))


def _data(body: dict[str, Any]) -> str:
    return "data: " + dumps_compact(body).decode() + "\n\n"


def error_chunk(message: str, *, type: str = "server_error", code: str | None = None) -> str:
    """An in-band error: a stream that already sent 200 cannot change its status any more."""
    return _data(error_body(message, type=type, code=code))


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def model_object(model: dict[str, Any]) -> dict[str, Any]:
    # `created` is not known for a configured model; 0 says so without inventing a date.
    return {"id": model["id"], "object": "model", "created": 0,
            "owned_by": model.get("owned_by") or model.get("provider") or "lunaos"}


def model_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    seen: dict[str, dict[str, Any]] = {}
    for model in models:  # one model served by two providers is listed once (the router picks)
        seen.setdefault(model["id"], model_object(model))
    return {"object": "list", "data": list(seen.values())}


# --------------------------------------------------------------------------- errors

# LunaOS error codes whose OpenAI counterpart has its own name.
_CODES = {
    "UNAUTHORIZED": "invalid_api_key",
    "KEY_INVALID": "invalid_api_key",
    "KEY_REVOKED": "invalid_api_key",
    "KEY_EXPIRED": "invalid_api_key",
    "TOKEN_EXPIRED": "invalid_api_key",
    "TOKEN_REVOKED": "invalid_api_key",
    "ACCOUNT_DISABLED": "account_deactivated",
    "MODEL_NOT_FOUND": "model_not_found",
    "LLM_UPSTREAM_ERROR": "upstream_error",
    "RATE_LIMIT_EXCEEDED": "rate_limit_exceeded",
    "VALIDATION_ERROR": None,
}


def error_type(status: int) -> str:
    """OpenAI's `type` for a status (OpenAI itself sends `invalid_request_error` for 401 and 403 too,
    and names the exhausted budget, `requests`, for 429)."""
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def from_api_error(error: ApiError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for a LunaOS error on an OpenAI-compatible route."""
    status = error.status
    code = _CODES.get(error.code, error.code.lower())
    param = None
    message = error.message
    if error.code == "VALIDATION_ERROR":
        status, param, message = 400, *_first_field(error.details.get("fields") or {})
    elif status == 404 and error.code == "MODEL_NOT_FOUND":
        param = "model"
    if error.code == "INSUFFICIENT_SCOPE":
        code = "insufficient_scope"
    return status, error_body(message, type=error_type(status), param=param, code=code), dict(error.headers)


def from_http_exception(error: HTTPException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Werkzeug/webargs errors (bad JSON, 405, 413, failed validation) in OpenAI's shape.

    Validation failures are 400 `invalid_request_error` naming the first bad parameter,
    as OpenAI answers them (not 422)."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    headers = dict(data.get("headers") or {})
    if status == 422:
        fields: dict[str, list[str]] = {}
        for location, messages in (data.get("messages") or {}).items():
            for name, texts in flatten_messages(messages).items():
                fields[name if location == "json" else f"{location}.{name}"] = texts
        param, message = _first_field(fields)
        return 400, error_body(message, type="invalid_request_error", param=param), headers
    if status == 400 and data.get("messages"):
        message = "We could not parse the JSON body of your request."
    elif status == 405:
        allowed = sorted(getattr(error, "valid_methods", None) or [])
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        message = f"Method not allowed; use {', '.join(allowed) or 'another method'}."
    else:
        message = data.get("message") or error.description or error.name
    code = {405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}.get(status)
    return status, error_body(message, type=error_type(status), code=code), headers


def _first_field(fields: dict[str, list[str]]) -> tuple[str | None, str]:
    """OpenAI names one `param` per error: the first failing field, all of them in the message."""
    if not fields:
        return None, "The request did not pass validation."
    param = next(iter(fields))
    parts = [f"{name}: {' '.join(texts)}" for name, texts in fields.items()]
    message = "Invalid request: " + "; ".join(parts)
    return (None if param == "_schema" else param), message
