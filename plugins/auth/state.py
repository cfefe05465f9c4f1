"""What every authenticated request needs to know about its user, cheaply and never stale.

With Redis, any change that affects authorisation (disable, role, tier,
logout, password change, a key revoked or rotated) writes a new version
token for the user in Redis and announces it on the invalidation channel
(app.invalidation). Each process caches the user's state:

- while its invalidation listener is connected, a cached check is trusted with
  no round trip at all, until an announcement for that user arrives;
- otherwise each request reads the version token (and, for a session, its
  revocation flag) in one MGET and reloads when it changed.

Either way a change made by any worker, host or CLI is seen on the next
request everywhere, never after a TTL.

Without Redis (the embedded default: one server process), the user row and
the revocation are read from the database on each request.
"""
from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app import invalidation, redis_client
from app.extensions import db, per_app
from app.ids import utcnow

from .models import RevokedSession, User


@dataclass(frozen=True, slots=True)
class UserState:
    id: str
    email: str
    role: str
    tier: str
    disabled: bool
    sessions_valid_after: datetime | None
    # Profile fields, so GET /v1/auth/me needs no query either.
    name: str | None
    mfa_enabled: bool
    created_at: datetime


TOPIC = "auth.user"


def _state(user: User) -> UserState:
    return UserState(user.id, user.email, user.role, user.tier, user.disabled, user.sessions_valid_after,
                     user.name, user.mfa_enabled, user.created_at)


class _Cache:
    FAST_MAX = 100_000

    def __init__(self) -> None:
        self.entries: dict[str, tuple[bytes, UserState]] = {}  # by user: (Redis version token, state)
        # By (user, session): (invalidation version, state), trusted with no round trip
        # while the invalidation listener is healthy.
        self.fast: OrderedDict[tuple[str, str | None], tuple[str, UserState]] = OrderedDict()
        self.lock = threading.Lock()

    def remember(self, key: tuple[str, str | None], version: str, state: UserState) -> None:
        with self.lock:
            self.fast[key] = (version, state)
            self.fast.move_to_end(key)
            while len(self.fast) > self.FAST_MAX:
                self.fast.popitem(last=False)


def _cache() -> _Cache:
    return per_app("lunaos.auth.state", _Cache)


def _version_key(user_id: str) -> str:
    return redis_client.key(f"auth:v:{user_id}")


def _revoked_key(session_id: str) -> str:
    return redis_client.key(f"auth:revoked:{session_id}")


def _load(user_id: str) -> UserState | None:
    user = db.session.get(User, user_id)
    return _state(user) if user is not None else None


def lookup(user_id: str, session_id: str | None = None) -> tuple[UserState | None, bool, bytes | None]:
    """(state of the user or None, whether `session_id` is revoked, the version token).

    The token (None without Redis) lets callers cache things that depend on the
    user, such as API key settings, and drop them when it changes.
    """
    client = redis_client.client()
    if client is None:
        revoked = bool(session_id) and db.session.get(RevokedSession, session_id) is not None
        return _load(user_id), revoked, None
    bus = invalidation.get()
    version = bus.version(TOPIC, user_id)  # read first: a change announced meanwhile moves it on
    cache = _cache()
    if bus.healthy:
        hit = cache.fast.get((user_id, session_id))
        if hit is not None and hit[0] == version:
            return hit[1], False, f"i{version}".encode()
    state, revoked, token = _lookup_redis(client, user_id, session_id)
    if bus.healthy and state is not None and not revoked:
        cache.remember((user_id, session_id), version, state)
        return state, revoked, f"i{version}".encode()
    return state, revoked, token


def _lookup_redis(client: Any, user_id: str, session_id: str | None) -> tuple[UserState | None, bool, bytes]:
    """The round-trip check: the user's version token (and the session's revocation) in one MGET."""
    keys = [_version_key(user_id)] + ([_revoked_key(session_id)] if session_id else [])
    values = client.mget(keys)
    token, revoked = values[0], bool(session_id) and values[-1] is not None
    cache = _cache()
    cached = cache.entries.get(user_id)
    if token is not None and cached is not None and cached[0] == token:
        return cached[1], revoked, token
    if token is None:
        # First sight of this user since Redis started: publish a token, or adopt a racer's.
        fresh = secrets.token_hex(8).encode()
        previous = client.set(keys[0], fresh, nx=True, get=True)
        token = previous if previous is not None else fresh
    # The token was read before the row: a change committed meanwhile replaces the
    # token too, so the next request reloads instead of trusting this snapshot.
    state = _load(user_id)
    if state is not None:
        with cache.lock:
            cache.entries[user_id] = (token, state)
    return state, revoked, token


def changed(user_id: str) -> None:
    """Call after committing a change that affects the user's authorisation: every
    process drops what it cached for the user before its next request uses it."""
    _cache().entries.pop(user_id, None)
    client = redis_client.client()
    if client is not None:
        client.set(_version_key(user_id), secrets.token_hex(8))
        invalidation.get().publish(TOPIC, user_id)


def revoke_session(user_id: str, session_id: str, until: datetime) -> None:
    client = redis_client.client()
    ttl = max(int((until - utcnow()).total_seconds()), 1)
    if client is not None:
        client.set(_revoked_key(session_id), user_id, ex=ttl)
        changed(user_id)  # processes trusting a cached check of this session drop it
        return
    if db.session.get(RevokedSession, session_id) is None:
        db.session.add(RevokedSession(session_id=session_id, user_id=user_id, expires_at=until))
    db.session.execute(sa.delete(RevokedSession).where(RevokedSession.expires_at < utcnow()))
    db.session.commit()
