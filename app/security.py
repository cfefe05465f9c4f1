"""Who is calling and what they may do.

The core names no identity plugin: plugins register *resolvers* that turn a
bearer credential into a `Principal`, and declare *scopes*. Views declare the
scopes they need with `require(...)`, which enforces them and documents them
in the OpenAPI spec.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from functools import wraps
from typing import Any
from collections.abc import Callable, Iterable, Mapping

from flask import Flask, current_app, g, request
from flask_smorest import Blueprint as SmorestBlueprint

from .errors import ApiError, Forbidden, NotFound, Unauthorized

# Used only for its documentation decorators (they need no registered blueprint).
_docs = SmorestBlueprint("lunaos_security_docs", __name__)

ANONYMOUS_KIND = "anonymous"
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "Access token from POST /v1/auth/login."},
    "apiKeyAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "lnos_live_... / lnos_test_...",
                   "description": "API key from POST /v1/api-keys, sent as a bearer token."},
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request. Resolvers build it; the core only reads it."""

    kind: str  # "anonymous", "user" (a session token) or "key"
    id: str | None = None  # what logs and rate limits name: the user id, or the key id
    user_id: str | None = None
    role: str = "user"
    tier: str | None = None
    scopes: frozenset[str] = frozenset()
    rate_limit: str | None = None  # overrides the tier's limit (a key's own limit)
    key_id: str | None = None
    allowed_projects: tuple[str, ...] | None = None  # None: every project
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def authenticated(self) -> bool:
        return self.kind != ANONYMOUS_KIND

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def has_scope(self, scope: str) -> bool:
        if scope in self.scopes or "*" in self.scopes:
            return True
        # "rag:*" grants every rag scope
        return scope.split(":", 1)[0] + ":*" in self.scopes

    def may_access_project(self, project_id: str) -> bool:
        return self.allowed_projects is None or project_id in self.allowed_projects


ANONYMOUS = Principal(kind=ANONYMOUS_KIND)
Resolver = Callable[[str], "Principal | None"]


@dataclass
class SecurityRegistry:
    resolvers: list[Resolver] = field(default_factory=list)
    scopes: dict[str, dict[str, str]] = field(default_factory=dict)  # scope -> {description, plugin}


def registry(app: Flask | None = None) -> SecurityRegistry:
    return (app or current_app._get_current_object()).extensions["lunaos.security"]


def register_resolver(app: Flask, resolver: Resolver) -> None:
    """Add a credential resolver: `resolver(token) -> Principal | None`.

    Return None when the token is not yours; raise `Unauthorized` (or an
    `ApiError` with a precise code) when it is yours but is not valid.
    """
    registry(app).resolvers.append(resolver)


def register_scopes(app: Flask, scopes: dict[str, str], plugin: str) -> None:
    reg = registry(app)
    reg.__dict__.pop("_role_cache", None)
    for name, description in scopes.items():
        owner = reg.scopes.get(name, {}).get("plugin")
        if owner and owner != plugin:
            raise RuntimeError(f"scope {name!r} of plugin {plugin!r} is already declared by plugin {owner!r}")
        reg.scopes[name] = {"description": description, "plugin": plugin}


def bearer_token() -> str | None:
    header = request._get_current_object().environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def current_principal() -> Principal:
    """Resolve once per request, lazily; a bad credential yields ANONYMOUS here
    and its error is raised only where authentication is required."""
    ctx = g._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup per call
    principal = getattr(ctx, "principal", None)
    if principal is not None:
        return principal
    principal = ANONYMOUS
    token = bearer_token()
    if token is None and request.environ.get("HTTP_AUTHORIZATION"):
        ctx.auth_error = Unauthorized("Authorization header must be 'Bearer <token>'.")
    elif token is not None:
        error: ApiError | None = None
        for resolver in registry().resolvers:
            try:
                found = resolver(token)
            except ApiError as refused:
                error = refused
                break
            if found is not None:
                principal = found
                break
        else:
            error = Unauthorized("Invalid or unrecognised credential.")
        ctx.auth_error = error
    ctx.principal = principal
    return principal


def authenticated_principal() -> Principal:
    principal = current_principal()
    if not principal.authenticated:
        raise g._get_current_object().get("auth_error") or Unauthorized()
    return principal


def check_scopes(principal: Principal, scopes: Iterable[str]) -> None:
    for scope in scopes:
        if not principal.has_scope(scope):
            raise Forbidden(
                f"This credential lacks the scope {scope!r}.",
                code="INSUFFICIENT_SCOPE",
                details={"required_scope": scope},
            )


def _security_doc(func: Callable, scopes: tuple[str, ...], auth: bool) -> dict[str, Any]:
    """The view's smorest documentation (`_apidoc`) plus its security requirement and
    401/403 responses. smorest's doc decorators are applied to a stand-in, so the
    view gains no wrapper layers to run on every request."""

    def stand_in() -> None:  # pragma: no cover - never called
        return None

    stand_in._apidoc = getattr(func, "_apidoc", {})  # type: ignore[attr-defined]
    security = [{"bearerAuth": list(scopes)}, {"apiKeyAuth": list(scopes)}] if auth else []
    doc: dict[str, Any] = {"security": security}
    if scopes:
        doc["x-required-scopes"] = list(scopes)
    documented = _docs.doc(**doc)(stand_in)
    if auth:
        documented = _docs.alt_response(401, response="UNAUTHORIZED")(documented)
        if scopes:
            documented = _docs.alt_response(403, response="FORBIDDEN")(documented)
    return documented._apidoc  # type: ignore[attr-defined]


def require(*scopes: str, auth: bool = True) -> Callable:
    """Decorate a view (function or MethodView method): authentication, scopes, docs.

    `require()` needs any authenticated caller; `require("rag:read")` a scope;
    `require(auth=False)` documents a public route.
    """

    def decorator(func: Callable) -> Callable:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if auth:
                check_scopes(authenticated_principal(), scopes)
            return func(*args, **kwargs)

        wrapper._apidoc = _security_doc(func, scopes, auth)  # type: ignore[attr-defined]
        wrapper._lunaos_scopes = tuple(scopes)  # type: ignore[attr-defined]
        return wrapper

    return decorator


def owned_or_404(obj: Any, principal: Principal | None = None, owner_attr: str = "owner_id") -> Any:
    """Return `obj` if the caller owns it; else 404, exactly as for an unknown id."""
    principal = principal or authenticated_principal()
    if obj is None or getattr(obj, owner_attr, None) != principal.user_id:
        raise NotFound()
    return obj


def admin_only(app: Flask, scope: str) -> bool:
    """Admin-only scopes: every `admin:*` scope plus those listed in ADMIN_ONLY_SCOPES."""
    return scope.startswith("admin:") or scope in app.config.get("ADMIN_ONLY_SCOPES", ())


def role_scopes(role: str, app: Flask | None = None) -> frozenset[str]:
    """The scopes a session of this role carries: admins everything, users all but admin-only."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    if role == "admin":
        return frozenset({"*"})
    cache = registry(app).__dict__.setdefault("_role_cache", {})
    if role not in cache:
        cache[role] = frozenset(s for s in registry(app).scopes if not admin_only(app, s))
    return cache[role]


def require_project(project_id: str, principal: Principal | None = None) -> None:
    """Refuse a key restricted by `allowed_projects` to other projects."""
    principal = principal or authenticated_principal()
    if not principal.may_access_project(project_id):
        raise Forbidden(
            f"This key may not access project {project_id!r}.",
            code="PROJECT_NOT_ALLOWED",
            details={"project_id": project_id, "allowed_projects": list(principal.allowed_projects or ())},
        )


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)


def init_app(app: Flask) -> None:
    app.extensions["lunaos.security"] = SecurityRegistry()
