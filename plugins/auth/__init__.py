"""Accounts, sessions (JWT), MFA and user administration."""
import os
from datetime import timedelta

from flask import Flask

from app.plugins import Plugin
from app.security import register_resolver

from .api import admin_blp, blp
from .cli import users_cli


def init_app(app: Flask) -> None:
    from . import service

    # Only HS256 in and out: `alg: none` and algorithm confusion are refused by PyJWT.
    app.config["JWT_ALGORITHM"] = "HS256"
    app.config["JWT_DECODE_ALGORITHMS"] = ["HS256"]
    for name, unit in (("JWT_ACCESS_TOKEN_EXPIRES", "AUTH_ACCESS_TOKEN_MINUTES"),
                       ("JWT_REFRESH_TOKEN_EXPIRES", "AUTH_REFRESH_TOKEN_DAYS")):
        amount = app.config[unit]
        app.config[name] = timedelta(minutes=amount) if unit.endswith("MINUTES") else timedelta(days=amount)
    register_resolver(app, service.resolve_access_token)


plugin = Plugin(
    name="auth",
    version="1.0.0",
    description="Accounts, sessions (JWT), TOTP MFA and user administration.",
    blueprint=(blp, admin_blp),
    scopes={"admin:users": "List and change any user's role, tier and state (admins only)"},
    models="plugins.auth.models",
    migrations=os.path.join(os.path.dirname(__file__), "migrations"),
    cli=users_cli,
    config={
        "AUTH_ACCESS_TOKEN_MINUTES": 15,
        "AUTH_REFRESH_TOKEN_DAYS": 30,
        "AUTH_ARGON2_TIME_COST": 3,
        "AUTH_ARGON2_MEMORY_KIB": 65536,
        "AUTH_ARGON2_PARALLELISM": 4,
        "AUTH_LOGIN_FAILURES_PER_ACCOUNT": "10/15 minutes",
        "AUTH_LOGIN_FAILURES_PER_IP": "50/15 minutes",
        "AUTH_MFA_ISSUER": "LunaOS",
    },
    init_app=init_app,
)
