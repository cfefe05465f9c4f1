"""Rate limits per principal (flask-limiter), headers, and the 429 envelope.

One budget per caller across every route: the caller's tier limit
(`RATELIMIT_TIERS`), a key's own `rate_limit` when set, else
`RATELIMIT_ANONYMOUS` per client IP. Storage is `memory://`, or Redis when
`REDIS_URL` is set so every worker and host shares one budget.

Plugins add route groups with a stricter extra limit (the AI routes on the
free tier): `register_group(app, "ai", provider)` and `@limit_group("ai")`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from flask import Flask, current_app, g, request
from flask.wrappers import Response
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from limits import RateLimitItem, parse

from .errors import RateLimited, handle_api_error
from .security import Principal, current_principal

GroupProvider = Callable[[Principal], "str | None"]


@dataclass
class _Window:
    limit: int
    remaining: int
    reset_at: int


def principal_key() -> str:
    principal = current_principal()
    if principal.key_id:
        return f"key:{principal.key_id}"
    if principal.user_id:
        return f"user:{principal.user_id}"
    return f"ip:{request.remote_addr or 'unknown'}"


def principal_limit() -> str:
    principal = current_principal()
    config = current_app.config
    if principal.rate_limit:
        return principal.rate_limit
    if principal.authenticated:
        tiers = config["RATELIMIT_TIERS"]
        return tiers.get(principal.tier or "free") or tiers.get("free") or config["RATELIMIT_ANONYMOUS"]
    return config["RATELIMIT_ANONYMOUS"]


def _view_attr(name: str) -> object:
    """A marker set on the view function, or on the MethodView method serving this request."""
    view = current_app.view_functions.get(request.endpoint or "")
    value = getattr(view, name, None)
    if value is None and getattr(view, "view_class", None) is not None:
        value = getattr(getattr(view.view_class, request.method.lower(), None), name, None)
    return value


def _exempt() -> bool:
    return request.method == "OPTIONS" or bool(_view_attr("_lunaos_rate_exempt"))


def exempt(view: Callable) -> Callable:
    """Mark a view as never rate limited (health checks, docs assets)."""
    view._lunaos_rate_exempt = True  # type: ignore[attr-defined]
    return view


def limit_group(name: str) -> Callable[[Callable], Callable]:
    """Mark a view as part of a limit group registered with `register_group`."""

    def decorator(view: Callable) -> Callable:
        view._lunaos_limit_group = name  # type: ignore[attr-defined]
        return view

    return decorator


def register_group(app: Flask, name: str, provider: GroupProvider) -> None:
    """`provider(principal)` returns an extra limit string for the group, or None."""
    app.extensions["lunaos.limit_groups"][name] = provider


def limiter(app: Flask | None = None) -> Limiter:
    return (app or current_app).extensions["lunaos.limiter"]


def _check_groups() -> None:
    group = _view_attr("_lunaos_limit_group")
    if group is None or _exempt():
        return
    provider = current_app.extensions["lunaos.limit_groups"].get(group)
    value = provider(current_principal()) if provider else None
    if not value:
        return
    strategy = limiter().limiter
    key = (current_app.config["REDIS_KEY_PREFIX"] + "rl", principal_key(), f"group:{group}")
    for item in parse_many(value):
        try:
            allowed = strategy.hit(item, *key)
            stats = strategy.get_window_stats(item, *key)
        except Exception:  # storage unreachable: the per-principal limit has already fallen back
            return
        window = _Window(item.amount, max(stats.remaining, 0), int(stats.reset_time))
        best = g.get("rate_window")
        if best is None or window.remaining < best.remaining:
            g.rate_window = window
        if not allowed:
            raise RateLimited(int(stats.reset_time - time.time()) + 1,
                              f"Rate limit exceeded for {group} requests ({item}).",
                              details={"limit": str(item), "group": group})


def parse_many(value: str) -> list[RateLimitItem]:
    return [parse(part.strip()) for part in value.split(";") if part.strip()]


def _inject_headers(response: Response) -> Response:
    window: _Window | None = g.get("rate_window")
    try:
        current = limiter().current_limit
    except Exception:  # storage trouble is already reported by the 5xx path
        current = None
    if current is not None:
        own = _Window(current.limit.amount, max(current.remaining, 0), int(current.reset_at))
        if window is None or own.remaining < window.remaining:
            window = own
    if window is not None:
        response.headers["X-RateLimit-Limit"] = str(window.limit)
        response.headers["X-RateLimit-Remaining"] = str(window.remaining)
        response.headers["X-RateLimit-Reset"] = str(window.reset_at)
    return response


def _on_exceeded(error: RateLimitExceeded):
    current = limiter().current_limit
    reset_at = int(current.reset_at) if current is not None else int(time.time()) + 60
    return handle_api_error(RateLimited(reset_at - int(time.time()), f"Rate limit exceeded ({error.limit.limit}).",
                                        details={"limit": str(error.limit.limit)}))


def init_app(app: Flask) -> None:
    config = app.config
    app.extensions["lunaos.limit_groups"] = {}
    instance = Limiter(
        key_func=principal_key,
        application_limits=[ApplicationLimit(limit_provider=principal_limit, scope="principal")],
        headers_enabled=False,  # ours below: flask-limiter 4 sets Retry-After on every response
        storage_uri=config["RATELIMIT_STORAGE_URI"],
        storage_options={"socket_timeout": 2, "socket_connect_timeout": 2} if config.get("REDIS_URL") else {},
        strategy=config["RATELIMIT_STRATEGY"],
        key_prefix=config["REDIS_KEY_PREFIX"] + "rl",
        enabled=bool(config["RATELIMIT_ENABLED"]),
        swallow_errors=False,
        # Redis down: keep limiting per process rather than failing every request.
        in_memory_fallback_enabled=bool(config.get("REDIS_URL")),
    )
    instance.request_filter(_exempt)
    instance.init_app(app)
    app.extensions["lunaos.limiter"] = instance
    if instance.enabled:
        app.before_request(_check_groups)
        app.after_request(_inject_headers)
    app.register_error_handler(RateLimitExceeded, _on_exceeded)
