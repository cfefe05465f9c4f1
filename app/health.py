"""Service checks for GET /health: database, Redis, queue and each plugin's own hook.

A check returns "ok", or a dict `{"status": "ok"|"degraded"|"down"|"not configured",
"detail": str, "required": bool}`. A required check that is down makes the
whole service "unhealthy" (503); anything else not ok makes it "degraded".
Results are cached for HEALTH_CACHE_SECONDS so a busy load balancer costs
one database round trip per second per worker, not one per probe.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import sqlalchemy as sa
from flask import Flask, current_app
from flask.wrappers import Response

from . import redis_client
from .extensions import db
from .ids import isoformat, utcnow

log = logging.getLogger("lunaos.health")
Check = Callable[[], Any]


@dataclass
class _Registered:
    check: Check
    required: bool


def register(app: Flask, name: str, check: Check, required: bool = False) -> None:
    checks = app.extensions["lunaos.health"]["checks"]
    if name in checks:
        raise RuntimeError(f"health check {name!r} is registered twice")
    checks[name] = _Registered(check, required)


def _database() -> dict[str, Any]:
    with db.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    return {"status": "ok", "required": True}


def _redis() -> dict[str, Any]:
    client = redis_client.client()
    if client is None:
        return {"status": "not configured"}
    client.ping()
    return {"status": "ok", "required": True}


def _run(name: str, registered: _Registered) -> dict[str, Any]:
    try:
        result = registered.check()
    except Exception as error:  # a failing check is a finding, not a crash
        log.warning("health check %s failed: %s", name, error)
        return {"status": "down", "detail": type(error).__name__, "required": registered.required}
    if isinstance(result, str):
        result = {"status": result}
    result.setdefault("required", registered.required)
    return result


def _label(result: dict[str, Any]) -> str:
    status, detail = result["status"], result.get("detail")
    return f"{status}: {detail}" if detail else status


def report() -> tuple[dict[str, Any], int]:
    state = current_app.extensions["lunaos.health"]
    ttl = float(current_app.config["HEALTH_CACHE_SECONDS"])
    cached = state["cached"]
    if cached and time.monotonic() - cached[0] < ttl:
        return cached[1], cached[2]
    # One caller refreshes; while it does, the others get the previous result rather
    # than queueing behind it (a probe storm must not pile up on a slow database).
    if not state["lock"].acquire(blocking=cached is None):
        return cached[1], cached[2]
    try:
        results = {name: _run(name, reg) for name, reg in state["checks"].items()}
    finally:
        state["lock"].release()
    overall = "healthy"
    for result in results.values():
        if result["status"] == "down" and result["required"]:
            overall = "unhealthy"
            break
        if result["status"] not in ("ok", "not configured"):
            overall = "degraded"
    from .plugins import iter_statuses

    statuses = [s for s in iter_statuses(current_app) if s.status != "disabled"]
    if overall == "healthy" and any(s.status == "failed" for s in statuses):
        overall = "degraded"  # skipped at start-up (PLUGINS_STRICT=false): serving, but not all of it
    body = {
        "status": overall,
        "version": current_app.config["LUNAOS_VERSION"],
        "timestamp": isoformat(utcnow()),
        "services": {name: _label(result) for name, result in results.items()},
        "plugins": {s.name: ("loaded" if s.status == "loaded" else f"failed: {(s.error or '').splitlines()[0]}")
                    for s in statuses},
    }
    status_code = 503 if overall == "unhealthy" else 200
    state["cached"] = (time.monotonic(), body, status_code)
    state["encoded"] = None
    return body, status_code


def response() -> Response:
    """The report as a response; its JSON is encoded once per refresh, not once per probe."""
    body, status_code = report()
    state = current_app.extensions["lunaos.health"]
    encoded = state.get("encoded")
    if encoded is None or encoded[0] is not body:
        from .core_schemas import HealthSchema

        encoded = (body, (current_app.json.dumps(HealthSchema().dump(body)) + "\n").encode())
        state["encoded"] = encoded
    return current_app.response_class(encoded[1], status=status_code, mimetype="application/json")


def init_app(app: Flask) -> None:
    app.extensions["lunaos.health"] = {"checks": {}, "cached": None, "lock": threading.Lock()}
    register(app, "database", _database, required=True)
    register(app, "redis", _redis, required=True)
