"""One JSON error envelope for every failure.

`{"error": {"code", "message", "details", "request_id"}}` for HTTP errors,
validation failures, rate limits and unhandled exceptions alike; no traceback
ever reaches a client, and every 500 is logged with its request id.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("lunaos.errors")

# HTTP status -> envelope code for errors raised by Flask/Werkzeug/webargs.
STATUS_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    410: "GONE",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    428: "PRECONDITION_REQUIRED",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "SERVICE_UNAVAILABLE",
}

_MESSAGES = {
    404: "No such resource.",
    405: "Method not allowed on this resource.",
    413: "Request body is too large.",
    415: "Unsupported media type.",
    422: "The request did not pass validation.",
    429: "Rate limit exceeded.",
}


class ApiError(Exception):
    """Raise from anywhere below a view; the handler turns it into the envelope."""

    status = 400
    code = "INVALID_REQUEST"
    message = "Invalid request."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.message = message or self.message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)


class InvalidRequest(ApiError):
    status, code, message = 400, "INVALID_REQUEST", "Invalid request."


class Unauthorized(ApiError):
    status, code, message = 401, "UNAUTHORIZED", "Authentication required."

    def __init__(self, message: str | None = None, **kw: Any):
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="lunaos"'})
        super().__init__(message, **kw)


class Forbidden(ApiError):
    status, code, message = 403, "FORBIDDEN", "Not allowed."


class NotFound(ApiError):
    status, code, message = 404, "NOT_FOUND", "No such resource."


class Conflict(ApiError):
    status, code, message = 409, "CONFLICT", "Conflict with the current state."


class ValidationFailed(ApiError):
    status, code, message = 422, "VALIDATION_ERROR", "The request did not pass validation."

    def __init__(self, fields: dict[str, Any], message: str | None = None, **kw: Any):
        super().__init__(message, details={"fields": fields}, **kw)


class RateLimited(ApiError):
    status, code, message = 429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded."

    def __init__(self, retry_after: int, message: str | None = None, **kw: Any):
        retry_after = max(int(retry_after), 1)
        details = {"retry_after": retry_after, **kw.pop("details", {})}
        headers = {"Retry-After": str(retry_after), **kw.pop("headers", {})}
        super().__init__(message, details=details, headers=headers, **kw)


class ServiceUnavailable(ApiError):
    status, code, message = 503, "SERVICE_UNAVAILABLE", "Service unavailable."


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": g.get("request_id"),
        }
    }


def error_response(status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
    response = jsonify(error_body(code, message, details))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow/webargs nested messages -> {"a.b.0.c": ["..."]}."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten_messages(value, name))
    elif isinstance(messages, (list, tuple)) and all(isinstance(m, str) for m in messages):
        out[prefix or "_schema"] = list(messages)
    elif isinstance(messages, (list, tuple)):
        for index, value in enumerate(messages):
            out.update(flatten_messages(value, f"{prefix}.{index}" if prefix else str(index)))
    else:
        out[prefix or "_schema"] = [str(messages)]
    return out


def _webargs_fields(data: dict[str, Any]) -> dict[str, list[str]]:
    # webargs keys messages by location first: {"json": {...}, "query": {...}}.
    fields: dict[str, list[str]] = {}
    for location, messages in (data.get("messages") or data.get("errors") or {}).items():
        flat = flatten_messages(messages)
        for name, msgs in flat.items():
            key = name if location in ("json", "form", "json_or_form") else f"{location}.{name}"
            fields.setdefault(key, []).extend(msgs)
    return fields


def handle_api_error(error: ApiError):
    return error_response(error.status, error.code, error.message, error.details, error.headers)


def handle_http_exception(error: HTTPException):
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    code = STATUS_CODES.get(status, (error.name or "ERROR").upper().replace(" ", "_"))
    headers = dict(data.get("headers") or {})
    details: dict[str, Any] = {}
    message = data.get("message") or _MESSAGES.get(status) or error.description or error.name
    if status == 422:
        details["fields"] = _webargs_fields(data)
    elif status == 400 and data.get("messages"):
        # webargs reports an unparsable JSON body as a 400 with messages
        message = "Request body is not valid JSON."
    elif status == 400:
        message = data.get("message") or "Malformed request."
    if status == 405:
        allowed = sorted(getattr(error, "valid_methods", None) or [])
        if allowed:
            headers["Allow"] = ", ".join(allowed)
            details["allowed_methods"] = allowed
    if status == 413:
        limit = _max_content_length()
        if limit:
            details["max_bytes"] = limit
    return error_response(status, code, message, details, headers)


def handle_unexpected(error: Exception):
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception(
        "unhandled exception", extra={"request_id": g.get("request_id"), "path": request.path if request else None}
    )
    return error_response(500, "INTERNAL_ERROR", "Internal server error; quote the request id when reporting it.")


def _max_content_length() -> int | None:
    from flask import current_app

    return current_app.config.get("MAX_CONTENT_LENGTH")


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
