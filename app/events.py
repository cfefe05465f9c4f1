"""Domain events: `publish(type, payload, owner)` on a blinker signal.

Listeners (the audit log, webhooks, usage metering) subscribe per app in
their plugin's `init_app`, so several apps in one process (tests) never see
each other's events. A listener that fails is logged and never breaks the
request that published the event.
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from collections.abc import Callable

from blinker import Namespace
from flask import Flask, current_app, g, has_request_context, request

from .ids import new_id, utcnow

log = logging.getLogger("lunaos.events")
_signals = Namespace()
event_published = _signals.signal("lunaos.event")


@dataclass(frozen=True)
class Event:
    type: str  # dotted, e.g. "agent.execution.completed"
    payload: dict[str, Any]
    owner_id: str | None = None  # the user whose object it concerns (webhook routing)
    actor_id: str | None = None  # who caused it (audit)
    id: str = field(default_factory=lambda: new_id("evt"))
    created_at: datetime = field(default_factory=utcnow)
    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


Listener = Callable[[Event], None]


def subscribe(app: Flask, pattern: str, listener: Listener) -> None:
    """Call `listener(event)` for events whose type matches `pattern` ("vault.*", "*")."""

    def receiver(sender: Flask, event: Event) -> None:
        if fnmatch.fnmatchcase(event.type, pattern):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %s failed on %s", getattr(listener, "__name__", listener), event.type)

    app.extensions["lunaos.event_receivers"].append(receiver)  # the app holds it alive
    event_published.connect(receiver, sender=app)  # weak: lives as long as the app


def publish(type: str, payload: dict[str, Any] | None = None, owner: str | None = None,
            actor: str | None = None) -> Event:
    context: dict[str, Any] = {}
    if has_request_context():
        principal = g.get("principal")
        context = {
            "request_id": g.get("request_id"),
            "ip": request.remote_addr,
            "user_agent": (request.user_agent.string or None),
        }
        if actor is None and principal is not None and principal.authenticated:
            actor = principal.user_id
    event = Event(type=type, payload=payload or {}, owner_id=owner, actor_id=actor, **context)
    event_published.send(current_app._get_current_object(), event=event)  # type: ignore[attr-defined]
    return event


def init_app(app: Flask) -> None:
    app.extensions["lunaos.event_receivers"] = []
