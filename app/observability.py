"""Per-request plumbing: request id, Server-Timing and one JSON access-log line."""
from __future__ import annotations

import logging
import re
import time

from flask import Flask, g, request
from flask.wrappers import Response

from . import logs
from .headers import append_trusted, has_header
from .ids import new_request_id

access_log = logging.getLogger("lunaos.access")

# Accept a caller's id only when it is short and plain (it is echoed and logged).
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


# Paths known to hold nothing to redact: the same few come again and again. One that does
# hold a secret is redacted each time, and never kept.
_PLAIN_PATHS: set[str] = set()


def _logged_path(path: str) -> str:
    if path in _PLAIN_PATHS:
        return path
    text = logs.redact_text(path)
    if text == path:
        if len(_PLAIN_PATHS) >= 4096:
            _PLAIN_PATHS.clear()
        _PLAIN_PATHS.add(path)
    return text


def _start() -> None:
    ctx = g._get_current_object()
    ctx.started = time.perf_counter()
    incoming = request._get_current_object().environ.get("HTTP_X_REQUEST_ID", "")
    ctx.request_id = incoming if incoming and _SANE_REQUEST_ID.match(incoming) else new_request_id()


def _finish(response: Response) -> Response:
    ctx = g._get_current_object()  # one proxy lookup, not one per field
    req = request._get_current_object()  # type: ignore[attr-defined]
    duration_ms = (time.perf_counter() - getattr(ctx, "started", time.perf_counter())) * 1000
    headers = response.headers
    request_id = getattr(ctx, "request_id", "")
    timing = f"total;dur={duration_ms:.1f}"
    existing = headers.get("Server-Timing") if has_header(headers, "server-timing") else None
    if existing or has_header(headers, "x-request-id"):
        headers["X-Request-ID"] = request_id
        headers["Server-Timing"] = f"{existing}, {timing}" if existing else timing
    else:  # the id passed _SANE_REQUEST_ID or was made here; the timing is a number
        append_trusted(headers, (("X-Request-ID", request_id), ("Server-Timing", timing)))
    if access_log.isEnabledFor(logging.INFO):
        principal = getattr(ctx, "principal", None)
        query = req.query_string
        logs.write_redacted(access_log, "request", {  # every field is safe or redacted here
            "request_id": request_id,
            "method": req.method,
            "path": _logged_path(req.path),
            "query": logs.redact_text(query.decode("latin-1")) if query else None,
            "status": response.status_code,
            "duration_ms": round(duration_ms, 2),
            "principal": principal.id if principal is not None else None,
            "ip": req.remote_addr,
        })
    return response


def init_app(app: Flask) -> None:
    handler = logs.configure(app.config["LOG_LEVEL"], app.config["LOG_JSON"],
                             flush_seconds=float(app.config["LOG_FLUSH_SECONDS"]))
    app.extensions["lunaos.log_handler"] = handler
    # First before_request: every later hook (limiter, auth) can log with the id.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
