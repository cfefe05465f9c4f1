"""API keys: `lnos_live_...` / `lnos_test_...` bearer credentials with scopes and limits."""
import os

from flask import Flask, g
from flask.wrappers import Response

from app.plugins import Plugin
from app.security import register_resolver

from .api import admin_blp, blp
from .cli import keys_cli


def _record_usage(response: Response) -> Response:
    from . import usage

    principal = g._get_current_object().get("principal")
    if principal is not None and principal.kind == "key":
        usage.record(principal.key_id, error=response.status_code >= 400)
    return response


def init_app(app: Flask) -> None:
    from . import service

    register_resolver(app, service.resolve_key)
    app.after_request(_record_usage)


plugin = Plugin(
    name="keys",
    version="1.0.0",
    description="API keys with scopes, expiry, own rate limits, project restrictions and usage counts.",
    blueprint=(blp, admin_blp),
    requires=("auth",),
    scopes={
        "keys:read": "List your API keys and their usage",
        "keys:write": "Create, rotate and revoke your API keys",
        "admin:keys": "List, revoke and report on every user's keys (admins only)",
    },
    models="plugins.keys.models",
    migrations=os.path.join(os.path.dirname(__file__), "migrations"),
    cli=keys_cli,
    config={
        # "" (not None): the core learns a setting's name and type from its default, and refuses
        # LUNAOS_ names it does not know. Empty counts as unset: generated in development,
        # refused in production.
        "KEYS_PEPPER": "",
        "KEYS_MAX_PER_USER": 100,
        "KEYS_MAX_LIFETIME_DAYS": 0,  # 0: keys may live forever
        "KEYS_USAGE_FLUSH_SECONDS": 2.0,
        "KEYS_USAGE_PERSIST_SECONDS": 60.0,
    },
    secrets=("KEYS_PEPPER",),
    init_app=init_app,
)
