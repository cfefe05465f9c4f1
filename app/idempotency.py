"""`Idempotency-Key`: a retried POST gets the first answer instead of doing the work twice.

Contract (API.md)
    A POST that carries `Idempotency-Key: <1 to 255 printable ASCII characters>` is run once per
    caller, route and key. A retry with the same key and the same request (query string and
    body) within IDEMPOTENCY_TTL seconds (24 h) gets the stored status, headers and body again,
    with `Idempotent-Replayed: true`; the view does not run. The same key with another request is
    409 `IDEMPOTENCY_KEY_REUSED`; while the first request is still running, a retry is 409
    `IDEMPOTENCY_KEY_IN_USE` with `Retry-After: 1`. A malformed key is 400 `INVALID_REQUEST`;
    an unreachable store is 503 `SERVICE_UNAVAILABLE` (a request asked to be run at most once is
    not run unprotected).

Which requests
    Every POST with the header, on every route (core or plugin), except views marked with
    `exempt` (webhooks whose sender has its own delivery ids, for instance). Other methods ignore
    the header: GET, PUT and DELETE are idempotent by definition, and API.md promises the
    header for POST only (PATCH routes here set fields, which a retry sets again to the same
    values). Without the header a request pays one dictionary lookup in the WSGI environ.

Whose key
    Keys are scoped to the credential: an API key's id, else the session's user id, else (for
    anonymous POSTs such as signup and login) the client IP address. Per credential rather than
    per user, so a key with fewer scopes can never replay an answer its owner's session got (a
    new API key's secret, say). Anonymous callers behind one NAT share a scope, which needs them
    to pick the same key and send the very same body (password included) to see each other's
    answer: acceptable for random keys. Keys are also scoped by method and path, so one key used
    on two routes is two independent keys.

Same request
    The fingerprint covers the query string and the raw body. A multipart body is fingerprinted
    by its parsed fields and files instead, because HTTP clients draw a new random boundary for
    every send and a retry would otherwise never match.

What is stored
    The status, the headers the view set (the per-request ones that later hooks add, such as
    X-Request-ID, rate-limit and security headers, are made fresh for the replay) and the body,
    for 2xx, 3xx and 4xx answers: a refused request gets the same refusal (a 409
    `EMAIL_TAKEN`, a 422) on retry. Not stored, the key is released and a retry runs again:
    5xx (the failure may be transient), 401, 403, 408, 425 and 429 (credentials, permissions
    and rate limits change between tries), streamed answers (server-sent events cannot be
    replayed; a retry of an SSE request runs again) and answers larger than
    IDEMPOTENCY_MAX_RESPONSE_BYTES (logged; none of the creating routes come near it).

Where
    With REDIS_URL, one Redis string per key: `SET NX PX` claims it for IDEMPOTENCY_LOCK_SECONDS,
    the answer replaces it with an expiry of IDEMPOTENCY_TTL. Otherwise the core table
    `idempotency_records`: the claim is an `INSERT ... ON CONFLICT DO NOTHING`, a lapsed claim or
    an expired answer is taken over by a conditional UPDATE, and expired rows are purged by the
    requests that use the table, at most every PURGE_INTERVAL seconds per process. The record's
    id is an HMAC of (scope, method, path, key) and its answer is sealed (AES-GCM) with a key
    derived from SECRET_KEY and the same material, so a dump of Redis or the database reveals
    neither the keys nor the answers (which may hold new API keys or session tokens).

A first request whose worker dies mid-way leaves the key claimed until the claim lapses
(IDEMPOTENCY_LOCK_SECONDS; keep it above the longest request), then a retry runs again.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from apispec import BasePlugin
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Flask, after_this_request, current_app, request
from flask.wrappers import Response

from . import redis_client
from .errors import ApiError, InvalidRequest, ServiceUnavailable
from .ids import utcnow
from .models import IdempotencyRecord
from .security import current_principal

log = logging.getLogger("lunaos.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_ENVIRON_KEY = "HTTP_IDEMPOTENCY_KEY"
MAX_KEY_LENGTH = 255
METHODS = frozenset({"POST"})
# Answers that say nothing lasting about the request: a retry must run again.
NOT_STORED = frozenset({401, 403, 408, 425, 429})
# Headers of the view's answer that are not replayed (recomputed, or never to be repeated).
_SKIPPED_HEADERS = frozenset({"content-length", "set-cookie"})
PURGE_INTERVAL = 600.0
RETRY_AFTER = 1
_EXEMPT_ATTR = "_lunaos_idempotency_exempt"


def exempt(view: Callable) -> Callable:
    """Mark a view (function or MethodView method) as ignoring `Idempotency-Key`."""
    setattr(view, _EXEMPT_ATTR, True)
    return view


@dataclass(frozen=True, slots=True)
class Found:
    """What the store holds for a key that another request claimed first."""

    fingerprint: str
    status: int | None  # None: that request is still running
    sealed: bytes | None = None  # the stored answer


# --------------------------------------------------------------------------- sealing


class _Keys:
    """Per-app secrets: one HKDF from SECRET_KEY at start-up, HMACs per request."""

    def __init__(self, secret: str):
        self._base = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"lunaos-idempotency",
                          info=b"idempotency records").derive(secret.encode())

    def _mac(self, label: bytes, material: bytes) -> bytes:
        return hmac.new(self._base, label + b"\0" + material, hashlib.sha256).digest()

    def record(self, material: bytes) -> tuple[str, bytes, bytes]:
        """(record id, sealing key, fingerprint key) for one scope/method/path/key."""
        return self._mac(b"id", material).hex(), self._mac(b"seal", material), self._mac(b"fp", material)


def _seal(key: bytes, record_id: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    plain = json.dumps(headers, separators=(",", ":")).encode() + b"\n" + body
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plain, record_id.encode())


def _unseal(key: bytes, record_id: str, sealed: bytes) -> tuple[list[tuple[str, str]], bytes]:
    plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], record_id.encode())
    head, _, body = plain.partition(b"\n")
    return [(str(k), str(v)) for k, v in json.loads(head)], body


# --------------------------------------------------------------------------- stores


class RedisStore:
    """One string per key: `<token 32 chars><fingerprint 64 chars><status 3 digits or ---><sealed answer>`."""

    # Compare-and-set / compare-and-delete on the claiming request's token.
    _COMPLETE = """
local current = redis.call("get", KEYS[1])
if current and string.sub(current, 1, 32) == ARGV[1] then
    redis.call("set", KEYS[1], ARGV[2], "PX", ARGV[3])
    return 1
end
return 0
"""
    _RELEASE = """
local current = redis.call("get", KEYS[1])
if current and string.sub(current, 1, 32) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""

    def __init__(self, app: Flask):
        client = redis_client.client(app)
        assert client is not None
        self.redis = client
        self.prefix = redis_client.key("idem:", app)
        self._complete = client.register_script(self._COMPLETE)
        self._release = client.register_script(self._RELEASE)

    def claim(self, record_id: str, fingerprint: str, token: str, lock_seconds: int, ttl: int) -> Found | None:
        name = self.prefix + record_id
        for _ in range(3):
            if self.redis.set(name, f"{token}{fingerprint}---".encode(), nx=True, px=lock_seconds * 1000):
                return None
            raw = self.redis.get(name)
            if raw is None:  # expired between the two commands
                continue
            status = raw[96:99].decode()
            return Found(raw[32:96].decode(), None if status == "---" else int(status), raw[99:] or None)
        raise RuntimeError("idempotency key changed hands repeatedly")

    def complete(self, record_id: str, fingerprint: str, token: str, status: int, sealed: bytes, ttl: int) -> None:
        value = f"{token}{fingerprint}{status:03d}".encode() + sealed
        if not self._complete(keys=[self.prefix + record_id], args=[token, value, ttl * 1000]):
            log.warning("idempotency claim lapsed before the answer was stored; a retry will run again")

    def release(self, record_id: str, token: str) -> None:
        self._release(keys=[self.prefix + record_id], args=[token])


class DatabaseStore:
    """The `idempotency_records` table, through its own connections (never the request's session)."""

    def __init__(self, app: Flask):
        from .extensions import db

        self.app = app
        self.db = db
        self.table = IdempotencyRecord.__table__
        self._next_purge = 0.0
        self._purge_lock = threading.Lock()

    @property
    def engine(self) -> sa.Engine:
        return self.db.engine

    def _insert_new(self, values: dict[str, Any]) -> Any:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - the project runs on these two
            raise RuntimeError(f"idempotency records: unsupported database {dialect}")
        return insert(self.table).values(**values).on_conflict_do_nothing(index_elements=["id"])

    def claim(self, record_id: str, fingerprint: str, token: str, lock_seconds: int, ttl: int) -> Found | None:
        t = self.table.c
        now = utcnow()
        claim = {"fingerprint": fingerprint, "token": token, "status": None, "response": None,
                 "locked_until": now + timedelta(seconds=lock_seconds), "expires_at": now + timedelta(seconds=ttl)}
        self._maybe_purge(now)
        for _ in range(3):
            with self.engine.begin() as conn:
                # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT.
                inserted = self._insert_new({"id": record_id, "created_at": now, **claim}).returning(t.id)
                if conn.execute(inserted).first() is not None:
                    return None
                # An expired answer, or a claim whose request died, is taken over; the condition
                # makes two retries racing for it agree on one winner.
                lapsed = sa.or_(sa.and_(t.status.is_not(None), t.expires_at <= now),
                                sa.and_(t.status.is_(None), t.locked_until <= now))
                taken = sa.update(self.table).where(t.id == record_id, lapsed).values(created_at=now, **claim)
                if conn.execute(taken.returning(t.id)).first() is not None:
                    return None
                row = conn.execute(sa.select(t.fingerprint, t.status, t.response).where(t.id == record_id)).first()
            if row is not None:
                return Found(row.fingerprint, row.status, row.response)
        raise RuntimeError("idempotency key changed hands repeatedly")

    def _writable(self) -> None:
        # SQLite has one writer: a session the view left in a write transaction (flushed, never
        # committed) would hold us until the busy timeout. Its work is discarded at the end of
        # the request anyway; discarding it now frees the lock.
        if self.engine.dialect.name == "sqlite":
            self.db.session.rollback()

    def complete(self, record_id: str, fingerprint: str, token: str, status: int, sealed: bytes, ttl: int) -> None:
        self._writable()
        t = self.table.c
        with self.engine.begin() as conn:
            stored = conn.execute(sa.update(self.table).where(t.id == record_id, t.token == token).values(
                status=status, response=sealed, locked_until=None,
                expires_at=utcnow() + timedelta(seconds=ttl)).returning(t.id)).first()
        if stored is None:
            log.warning("idempotency claim lapsed before the answer was stored; a retry will run again")

    def release(self, record_id: str, token: str) -> None:
        self._writable()
        t = self.table.c
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(t.id == record_id, t.token == token, t.status.is_(None)))

    def _maybe_purge(self, now: Any) -> None:
        moment = time.monotonic()
        if moment < self._next_purge or not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._next_purge = moment + PURGE_INTERVAL
            t = self.table.c
            with self.engine.begin() as conn:
                conn.execute(sa.delete(self.table).where(
                    t.expires_at <= now, sa.or_(t.status.is_not(None), t.locked_until <= now)))
        except Exception as error:  # a failed purge is retried next interval; the request goes on
            log.warning("purging expired idempotency records failed: %s", error)
        finally:
            self._purge_lock.release()


Store = RedisStore | DatabaseStore


@dataclass(frozen=True, slots=True)
class _State:
    store: Store
    keys: _Keys
    ttl: int
    lock_seconds: int
    max_bytes: int


def _state(app: Flask | None = None) -> _State:
    return (app or current_app).extensions["lunaos.idempotency"]


# --------------------------------------------------------------------------- request hooks


def _view_exempt() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, _EXEMPT_ATTR, False):
        return True
    view_class = getattr(view, "view_class", None)
    method = getattr(view_class, request.method.lower(), None) if view_class is not None else None
    return bool(getattr(method, _EXEMPT_ATTR, False))


def valid_key(key: str) -> bool:
    return 1 <= len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def _scope() -> str:
    principal = current_principal()
    if principal.key_id:
        return f"key:{principal.key_id}"
    if principal.user_id:
        return f"user:{principal.user_id}"
    if principal.authenticated:
        return f"{principal.kind}:{principal.id}"
    return f"ip:{request.remote_addr or ''}"


def _fingerprint(fp_key: bytes) -> str:
    mac = hmac.new(fp_key, request.query_string + b"\0", hashlib.sha256)
    if request.mimetype == "multipart/form-data":
        # The parsed parts, in a stable order: the boundary differs on every send.
        parts: list[tuple[str, ...]] = sorted(("field", name, value) for name, value in request.form.items(multi=True))
        for name, upload in sorted(request.files.items(multi=True), key=lambda item: (item[0], item[1].filename or "")):
            content = upload.stream.read()
            upload.stream.seek(0)
            parts.append(("file", name, upload.filename or "", upload.mimetype,
                          hashlib.sha256(content).hexdigest()))
        mac.update(json.dumps(parts).encode())
    else:
        mac.update(request.get_data(cache=True))
    return mac.hexdigest()


def _before() -> Response | None:
    """Claim the key, or answer from the store. Free for requests without the header."""
    environ = request._get_current_object().environ
    if _ENVIRON_KEY not in environ or environ["REQUEST_METHOD"] not in METHODS:
        return None
    if request.endpoint is None or _view_exempt():  # unknown route (its 404/405 follows), or opted out
        return None
    key = environ[_ENVIRON_KEY]
    if not valid_key(key):
        raise InvalidRequest(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
                             details={"header": HEADER})
    state = _state()
    material = "\0".join((_scope(), request.method, request.path, key)).encode()
    record_id, seal_key, fp_key = state.keys.record(material)
    fingerprint = _fingerprint(fp_key)
    token = os.urandom(16).hex()
    try:
        found = state.store.claim(record_id, fingerprint, token, state.lock_seconds, state.ttl)
    except Exception as error:
        log.warning("idempotency store unreachable: %s", error)
        raise ServiceUnavailable("The idempotency store is unreachable; retry later.",
                                 headers={"Retry-After": "5"}, details={"retry_after": 5}) from None
    if found is None:
        after_this_request(_finisher(state, record_id, seal_key, fingerprint, token))
        return None
    if not hmac.compare_digest(found.fingerprint, fingerprint):
        raise ApiError(f"This {HEADER} was already used with a different request; use a new key for a new request.",
                       code="IDEMPOTENCY_KEY_REUSED", status=409, details={"header": HEADER})
    if found.status is None:
        raise ApiError(f"A request with this {HEADER} is still in progress; retry shortly.",
                       code="IDEMPOTENCY_KEY_IN_USE", status=409,
                       details={"header": HEADER, "retry_after": RETRY_AFTER},
                       headers={"Retry-After": str(RETRY_AFTER)})
    headers, body = _unseal(seal_key, record_id, found.sealed or b"")
    response = Response(body, status=found.status, headers=headers)
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _finisher(state: _State, record_id: str, seal_key: bytes, fingerprint: str, token: str
              ) -> Callable[[Response], Response]:
    def finish(response: Response) -> Response:
        # Runs before the app's after_request hooks: the headers seen here are the view's own.
        try:
            status = response.status_code
            storable = (status < 500 and status not in NOT_STORED
                        and not response.is_streamed and not response.direct_passthrough)
            body = response.get_data() if storable else b""
            if storable and len(body) > state.max_bytes:
                log.warning("answer of %s %s (%d bytes) is over IDEMPOTENCY_MAX_RESPONSE_BYTES; not stored",
                            request.method, request.path, len(body))
                storable = False
            if not storable:
                state.store.release(record_id, token)
                return response
            headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _SKIPPED_HEADERS]
            state.store.complete(record_id, fingerprint, token, status,
                                 _seal(seal_key, record_id, headers, body), state.ttl)
        except Exception:  # the answer still goes out; the claim lapses after IDEMPOTENCY_LOCK_SECONDS
            log.exception("storing the idempotent answer failed")
        return response

    return finish


# --------------------------------------------------------------------------- OpenAPI


class SpecPlugin(BasePlugin):
    """apispec plugin: documents the header and the 409 on every POST that honours it.

    apispec calls it for each path a blueprint registers (after the app has the blueprint's
    views, so `exempt` marks are visible), on every route, core or plugin, registered later.
    """

    PARAMETER = {
        "in": "header",
        "name": HEADER,
        "required": False,
        "description": (
            "Makes a retry safe: a repeat with the same key and the same request within 24 h gets the "
            f"first answer again (with `{REPLAYED_HEADER}: true`) instead of running twice. Scoped to "
            "your credential and this route."),
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[\\x20-\\x7e]+$"},
    }
    CONFLICT = ("`IDEMPOTENCY_KEY_REUSED`: the Idempotency-Key was used with another request; "
                "`IDEMPOTENCY_KEY_IN_USE`: its first request is still running (see Retry-After)")

    def __init__(self, app: Flask):
        self.app = app

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        rule = kwargs.get("rule")
        view = self.app.view_functions.get(rule.endpoint) if rule is not None else None
        for method, operation in (operations or {}).items():
            if method.upper() not in METHODS or self._exempt(view, method):
                continue
            params = operation.setdefault("parameters", [])
            if not any(isinstance(p, dict) and p.get("name") == HEADER for p in params):
                params.append(dict(self.PARAMETER))
            responses = operation.setdefault("responses", {})
            if not any(str(code) == "409" for code in responses):
                responses["409"] = self._conflict(responses)

    @staticmethod
    def _exempt(view: Any, method: str) -> bool:
        if getattr(view, _EXEMPT_ATTR, False):
            return True
        handler = getattr(getattr(view, "view_class", None), method.lower(), None)
        return bool(getattr(handler, _EXEMPT_ATTR, False))

    def _conflict(self, responses: dict) -> Any:
        # Routes with an error format of their own (the OpenAI-compatible ones) document it
        # inline on their 400; the 409 then comes in that format too.
        bad_request = next((r for code, r in responses.items() if str(code) == "400"), None)
        if isinstance(bad_request, dict) and "content" in bad_request:
            return {"description": self.CONFLICT, "content": bad_request["content"]}
        return {"description": self.CONFLICT, "content": {"application/json": {"schema": "Error"}}}


# --------------------------------------------------------------------------- set-up


def _positive_int(app: Flask, name: str) -> int:
    value = app.config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        from .config import ConfigError

        raise ConfigError(f"LUNAOS_{name}: a whole number of at least 1, got {value!r}")
    return value


def init_app(app: Flask) -> None:
    """After ratelimit (a request refused for its rate never claims a key), before any blueprint."""
    store: Store = RedisStore(app) if redis_client.client(app) is not None else DatabaseStore(app)
    app.extensions["lunaos.idempotency"] = _State(
        store=store,
        keys=_Keys(app.config["SECRET_KEY"]),
        ttl=_positive_int(app, "IDEMPOTENCY_TTL"),
        lock_seconds=_positive_int(app, "IDEMPOTENCY_LOCK_SECONDS"),
        max_bytes=_positive_int(app, "IDEMPOTENCY_MAX_RESPONSE_BYTES"),
    )
    app.before_request(_before)
