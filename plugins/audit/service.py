"""Write audit events from `app.events` and read them back for admins."""
from __future__ import annotations

import fnmatch
import logging
from datetime import datetime

import sqlalchemy as sa
from flask import current_app

from app.events import Event
from app.extensions import db
from app.http import Page, paginate
from app.ids import new_id
from app.logs import redact

from .models import AuditEvent

log = logging.getLogger("lunaos.audit")


def audited(event_type: str) -> bool:
    return any(fnmatch.fnmatchcase(event_type, p) for p in current_app.config["AUDIT_EVENT_TYPES"])


def record(event: Event) -> None:
    """Listener: persist a security event in its own transaction, so the caller's session is
    neither committed nor rolled back by it (publishers publish after their own commit)."""
    if not audited(event.type):
        return
    row = {
        "id": new_id("aud"),
        "type": event.type, "actor_id": event.actor_id, "target_id": event.owner_id, "ip": event.ip,
        "user_agent": (event.user_agent or "")[:300] or None, "request_id": event.request_id,
        "data": redact(event.payload), "created_at": event.created_at,
    }
    with db.engine.begin() as connection:
        connection.execute(sa.insert(AuditEvent).values(**row))


def search(page: int, per_page: int, actor_id: str | None = None, target_id: str | None = None,
           type: str | None = None, since: datetime | None = None, until: datetime | None = None) -> Page:
    query = sa.select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    if actor_id:
        query = query.where(AuditEvent.actor_id == actor_id)
    if target_id:
        query = query.where(AuditEvent.target_id == target_id)
    if type:
        # "auth.*" matches a family of events; anything else is an exact type.
        query = query.where(AuditEvent.type.startswith(type[:-1], autoescape=True) if type.endswith("*")
                            else AuditEvent.type == type)
    if since:
        query = query.where(AuditEvent.created_at >= since)
    if until:
        query = query.where(AuditEvent.created_at < until)
    return paginate(query, page, per_page)
