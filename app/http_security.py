"""Browser-facing security settings in one place: headers (Talisman), CORS, proxies."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, request
from flask.wrappers import Response
from flask_talisman import Talisman
from werkzeug.datastructures import Headers
from werkzeug.middleware.proxy_fix import ProxyFix

from .extensions import cors

CSP = {"default-src": "'self'", "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'self'"}
EXPOSED_HEADERS = ["X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                   "Retry-After", "Server-Timing", "ETag", "X-LLM-Provider", "X-LLM-Attempts"]
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "Last-Event-ID",
                   "If-None-Match", "X-Vault-MFA-Code"]
CROSS_ORIGIN_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_CROSS_ORIGIN = [(name.lower(), name, value) for name, value in CROSS_ORIGIN_HEADERS.items()]


def _add_cross_origin(headers: Headers, present: set[str]) -> None:
    """Cross-origin isolation headers (Talisman has none), unless the view set its own."""
    for lower, name, value in _CROSS_ORIGIN:
        if lower not in present:
            headers.add(name, value)


@dataclass(frozen=True)
class _ViewHeaders:
    force_https: bool
    nonce: bool  # CSP nonces: the headers differ per request, so stock Talisman builds them
    before_hsts: tuple[tuple[str, str, str], ...]  # (lowercase name, name, value), in Talisman's order


class _Talisman(Talisman):
    """flask-talisman with each view's header values worked out once.

    Stock Talisman rebuilds every header on every response (its per-view options
    are merged four times per request and the CSP is re-parsed each time), yet
    the values depend only on the settings and the view's `talisman_view_options`.
    They are computed by Talisman's own methods on a view's first request and
    reused; what depends on the request (HTTPS redirect, HSTS, CSP nonces) is
    still decided per request by Talisman.
    """

    def init_app(self, app: Flask, **options: Any) -> None:
        self._views: dict[str | None, _ViewHeaders] = {}
        super().init_app(app, **options)

    def _view(self) -> _ViewHeaders:
        endpoint = request.endpoint
        view = self._views.get(endpoint)
        if view is None:
            options = self._get_local_options()
            nonce = bool(options["content_security_policy"] and options["content_security_policy_nonce_in"])
            probe = Headers()
            if not nonce:
                self._set_feature_policy_headers(probe, options)
                self._set_permissions_policy_headers(probe, options)
                self._set_document_policy_headers(probe, options)
                self._set_frame_options_headers(probe, options)
                self._set_content_security_policy_headers(probe, options)
            view = _ViewHeaders(bool(options["force_https"]), nonce,
                                tuple((name.lower(), name, value) for name, value in probe.items()))
            self._views[endpoint] = view
        return view

    def _force_https(self):  # type: ignore[no-untyped-def]
        if self._view().force_https:
            return super()._force_https()
        # What the stock method does when it has nothing to redirect.
        if self.session_cookie_secure and not self.app.debug:
            self.app.config["SESSION_COOKIE_SECURE"] = True
        return None

    def _make_nonce(self) -> None:
        if self._view().nonce:
            super()._make_nonce()

    def _set_response_headers(self, response: Response) -> Response:
        view = self._view()
        if view.nonce:
            response = super()._set_response_headers(response)
            _add_cross_origin(response.headers, {name.lower() for name in response.headers.keys()})
            return response
        headers = response.headers
        present = {name.lower() for name in headers.keys()}
        _add_cross_origin(headers, present)
        for lower, name, value in view.before_hsts:
            if lower in present:
                headers[name] = value  # Talisman's value replaces the view's, as stock
            else:
                headers.add(name, value)
        self._set_hsts_headers(headers)
        self._set_referrer_policy_headers(headers)
        return response


class _DropForwardedProto:
    """flask-talisman reads X-Forwarded-Proto itself, from any client: a forged
    `https` would get HSTS over plain HTTP and skip the FORCE_HTTPS redirect. The
    header is removed here; behind trusted proxies ProxyFix (outside this) has
    already turned it into the request's scheme."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ.pop("HTTP_X_FORWARDED_PROTO", None)
        return self.wsgi_app(environ, start_response)


def init_app(app: Flask) -> None:
    proxies = int(app.config["PROXY_FIX"])
    app.wsgi_app = _DropForwardedProto(app.wsgi_app)  # type: ignore[method-assign]
    if proxies:
        # Trust exactly this many proxies for client IP, scheme and host (HSTS, rate-limit keys).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)  # type: ignore[method-assign]
    talisman = _Talisman()
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
    # flask-cors works its headers out anew for every response; for simple (non-preflight)
    # requests they depend only on the Origin, so they are remembered per Origin. flask-cors
    # skips a response that already carries Access-Control-Allow-Origin.
    app.after_request(_remember_cors_headers)  # after_request hooks run in reverse: after flask-cors
    cors.init_app(
        app,
        origins=app.config["CORS_ORIGINS"],
        expose_headers=EXPOSED_HEADERS,
        allow_headers=ALLOWED_HEADERS,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        max_age=600,
        supports_credentials=False,
    )
    app.after_request(_cached_cors_headers)  # ...and this one before it
    app.extensions["lunaos.cors_cache"] = {}


_CORS_PREFIX = "access-control-"
_CORS_CACHE_SIZE = 256


def _cors_cache_key() -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin and request.method != "OPTIONS" else None


def _cached_cors_headers(response: Response) -> Response:
    key = _cors_cache_key()
    cached = current_app.extensions["lunaos.cors_cache"].get(key) if key else None
    if cached:
        for name, value in cached:
            response.headers.add(name, value)
    return response


def _remember_cors_headers(response: Response) -> Response:
    key = _cors_cache_key()
    cache = current_app.extensions["lunaos.cors_cache"]
    if key and key not in cache and len(cache) < _CORS_CACHE_SIZE:
        added = [(n, v) for n, v in response.headers.items() if n.lower().startswith(_CORS_PREFIX)]
        # Only allowed origins are cached (an empty entry would not make flask-cors skip).
        if added:
            added += [("Vary", v) for v in response.headers.getlist("Vary") if v == "Origin"]
            cache[key] = tuple(added)
    return response
