"""The executor: a natural-language request becomes a risk-rated shell plan, run step by step in a sandbox."""
import os

from flask import Flask, current_app

from app.plugins import Plugin

from . import tasks  # noqa: F401  (registers the run job kind, in web servers and RQ workers alike)
from .api import blp
from .settings import DEFAULTS

SCOPE = "executor:run"


def init_app(app: Flask) -> None:
    from . import settings

    settings.check(app)
    if app.config["EXECUTOR_ADMIN_ONLY"]:
        # The core's ADMIN_ONLY_SCOPES decides which scopes a `user` session lacks; this scope joins
        # it unless EXECUTOR_ADMIN_ONLY=false (then any user may be given it).
        current = app.config.get("ADMIN_ONLY_SCOPES") or []
        current = [current] if isinstance(current, str) else list(current)
        if SCOPE not in current:
            app.config["ADMIN_ONLY_SCOPES"] = [*current, SCOPE]


def _health() -> dict:
    from . import settings

    return settings.describe(current_app)


plugin = Plugin(
    name="executor",
    version="1.0.0",
    description="Plans shell commands from natural language, rates their risk and runs them sandboxed.",
    blueprint=(blp,),
    requires=("auth", "keys"),
    scopes={SCOPE: "Plan and run shell commands on the server (admins only unless EXECUTOR_ADMIN_ONLY=false)"},
    models="plugins.executor.models",
    migrations=os.path.join(os.path.dirname(__file__), "migrations"),
    config=DEFAULTS,
    init_app=init_app,
    health=_health,
)
