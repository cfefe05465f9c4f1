"""The process's shared Redis client, or None in the embedded default (no REDIS_URL)."""
from __future__ import annotations

from flask import Flask, current_app
from redis import Redis


def client(app: Flask | None = None) -> Redis | None:
    return (app or current_app._get_current_object()).extensions.get("lunaos.redis")


def key(name: str, app: Flask | None = None) -> str:
    """Namespace a Redis key so several deployments (or test workers) can share one server."""
    return (app or current_app._get_current_object()).config["REDIS_KEY_PREFIX"] + name


def init_app(app: Flask) -> None:
    url = app.config.get("REDIS_URL")
    # redis-py pools notice a fork (pid check) and reconnect, so gunicorn preload is safe.
    app.extensions["lunaos.redis"] = (
        Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30) if url else None
    )
