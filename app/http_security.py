"""Browser-facing security settings in one place: headers (Talisman), CORS, proxies."""
from __future__ import annotations

from flask import Flask
from flask.wrappers import Response
from flask_talisman import Talisman
from werkzeug.middleware.proxy_fix import ProxyFix

from .extensions import cors

CSP = {"default-src": "'self'", "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'self'"}
EXPOSED_HEADERS = ["X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                   "Retry-After", "Server-Timing", "ETag", "X-LunaOS-Attempts"]
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "Last-Event-ID",
                   "If-None-Match", "X-Vault-MFA-Code"]
CROSS_ORIGIN_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _cross_origin_isolation(response: Response) -> Response:
    for name, value in CROSS_ORIGIN_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    proxies = int(app.config["PROXY_FIX"])
    if proxies:
        # Trust exactly this many proxies for client IP, scheme and host (HSTS, rate-limit keys).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)  # type: ignore[method-assign]
    talisman = Talisman()
    talisman.init_app(
        app,
        force_https=bool(app.config["FORCE_HTTPS"]),
        strict_transport_security=True,
        strict_transport_security_max_age=365 * 24 * 3600,
        strict_transport_security_include_subdomains=True,
        strict_transport_security_preload=True,
        content_security_policy=CSP,
        frame_options="DENY",
        referrer_policy="no-referrer",
        session_cookie_secure=True,
        x_content_type_options=True,
    )
    app.extensions["lunaos.talisman"] = talisman
    app.after_request(_cross_origin_isolation)
    cors.init_app(
        app,
        origins=app.config["CORS_ORIGINS"],
        expose_headers=EXPOSED_HEADERS,
        allow_headers=ALLOWED_HEADERS,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        max_age=600,
        supports_credentials=False,
    )
