"""The security audit log: every security event published through `app.events`."""
import os

from flask import Flask

from app import events
from app.plugins import Plugin

from .api import blp


def init_app(app: Flask) -> None:
    from . import service

    events.subscribe(app, "*", service.record)


plugin = Plugin(
    name="audit",
    version="1.0.0",
    description="Audit trail of security events (logins, keys, admin changes, vault reads, ...).",
    blueprint=blp,
    scopes={"admin:audit": "Read the security audit log (admins only)"},
    models="plugins.audit.models",
    migrations=os.path.join(os.path.dirname(__file__), "migrations"),
    config={"AUDIT_EVENT_TYPES": ["auth.*", "keys.*", "admin.*", "vault.*", "billing.*", "executor.*"]},
    init_app=init_app,
)
