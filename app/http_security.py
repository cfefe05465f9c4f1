"""Browser-facing security settings in one place: headers (Talisman), CORS, proxies."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, request
from flask.wrappers import Response
from flask_talisman import Talisman
from werkzeug.datastructures import Headers
from werkzeug.middleware.proxy_fix import ProxyFix

from .extensions import cors
from .headers import append_trusted, has_header

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
    plain: tuple[tuple[str, str], ...]  # every constant header, for a response that has none of them
    names: frozenset[str]  # their lowercase names


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
        endpoint = request._get_current_object().endpoint
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
            before_hsts = tuple((name.lower(), name, value) for name, value in probe.items())
            plain = (tuple(CROSS_ORIGIN_HEADERS.items()) + tuple((name, value) for _, name, value in before_hsts)
                     + (("Referrer-Policy", self.referrer_policy),))
            view = _ViewHeaders(bool(options["force_https"]), nonce, before_hsts, plain,
                                frozenset(name.lower() for name, _ in plain))
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
        if present.isdisjoint(view.names):  # the usual case: the view set none of them
            append_trusted(headers, view.plain)
        else:
            _add_cross_origin(headers, present)
            for lower, name, value in view.before_hsts:
                if lower in present:
                    headers[name] = value  # Talisman's value replaces the view's, as stock
                else:
                    headers.add(name, value)
            self._set_referrer_policy_headers(headers)
        if request._get_current_object().is_secure:  # X-Forwarded-Proto never gets here (see _DropForwardedProto)
            self._set_hsts_headers(headers)
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
    cors.init_app(
        app,
        origins=app.config["CORS_ORIGINS"],
        expose_headers=EXPOSED_HEADERS,
        allow_headers=ALLOWED_HEADERS,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        max_age=600,
        supports_credentials=False,
        always_send=False,  # no Origin, no CORS request: no allow headers (flask-cors would name the first origin)
    )
    # flask-cors works its headers out anew for every response (about a sixth of a small
    # request's time here). For anything but a preflight they depend only on the Origin, so
    # its hook is taken back and called once per Origin; preflights still go to it each time.
    hook = app.after_request_funcs[None].pop()
    if getattr(hook, "__name__", "") != "cors_after_request":  # pragma: no cover - flask-cors changed
        raise RuntimeError("flask-cors did not register its after_request hook as expected")
    app.after_request(_CachedCors(hook, app.response_class))


class _CachedCors:
    """flask-cors's headers for simple requests, remembered per Origin (bounded).

    Every response says `Vary: Origin` (but those whose view set its own allow header, which
    are left alone as flask-cors leaves them): flask-cors leaves it off responses without CORS
    headers (no Origin, or one not allowed) and off those for a single configured origin or
    "*" (which it answers by echoing the Origin), and a shared cache could then hand one
    origin's response to another.
    """

    SIZE = 256

    def __init__(self, compute: Callable[[Response], Response], response_class: type[Response]) -> None:
        self.compute = compute
        self.response_class = response_class
        self.cache: dict[str | None, tuple[tuple[str, str], ...]] = {}

    def __call__(self, response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        headers = response.headers
        if req.method == "OPTIONS" or has_header(headers, "vary"):
            response = self.compute(response)  # preflights; a view's own Vary must be merged by flask-cors
            response.vary.add("Origin")
            return response
        if has_header(headers, "access-control-allow-origin"):
            return response  # a view decided (flask-cors leaves such responses alone too)
        origin = req.headers.get("Origin")
        found = self.cache.get(origin)
        if found is None:
            probe = self.compute(self.response_class())
            found = tuple((name, value) for name, value in probe.headers.items()
                          if name.lower().startswith("access-control-") or name == "Vary")
            if not any(name == "Vary" for name, _ in found):
                found += (("Vary", "Origin"),)
            # Junk Origins cannot crowd out real ones: only what got an allow header is kept.
            if len(self.cache) < self.SIZE and (origin is None or "Access-Control-Allow-Origin" in probe.headers):
                self.cache[origin] = found
        append_trusted(headers, found)
        return response
