"""LunaOS server core. `create_app` is the only way an app is built (web, CLI, workers)."""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

from flask import Flask

from . import (cli, config, core_api, database, errors, events, health, http_security, idempotency, invalidation,
               llm, observability, openapi, plugins, ratelimit, redis_client, security, sse, tasks)
from .application import LunaFlask
from .extensions import jwt


def _version() -> str:
    try:
        return importlib.metadata.version("lunaos-server")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+local"


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    instance = os.environ.get("LUNAOS_INSTANCE_PATH") or str(Path(__file__).resolve().parent.parent / "instance")
    app = LunaFlask(__name__, instance_path=instance, instance_relative_config=True)
    app.json.sort_keys = False  # keep envelopes in their documented order
    config.load(app, overrides)
    app.config["LUNAOS_VERSION"] = _version()
    found = plugins.load(app)
    config.check(app, found.config_defaults(), found.secrets())

    observability.init_app(app)
    errors.init_app(app)
    http_security.init_app(app)
    database.init_app(app)
    redis_client.init_app(app)
    invalidation.init_app(app)
    jwt.init_app(app)
    security.init_app(app)
    ratelimit.init_app(app)
    openapi.init_app(app)
    idempotency.init_app(app)  # after ratelimit: a request refused for its rate claims no key
    events.init_app(app)
    health.init_app(app)
    sse.init_app(app)
    tasks.init_app(app)  # after health: registers the "queue" check
    llm.init_app(app)  # after health: registers the "llm" check
    core_api.init_app(app)
    cli.init_app(app)
    plugins.activate(app, found)
    return app
