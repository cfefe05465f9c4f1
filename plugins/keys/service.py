"""API keys: issue, verify (cached, never stale), rotate, revoke, report usage."""
from __future__ import annotations

import hmac
import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from flask import current_app
from limits import parse_many
from sqlalchemy.dialects.postgresql import JSONB

from app import events
from app.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from app.extensions import db, per_app
from app.http import Page, paginate
from app.ids import utcnow
from app.security import Principal, registry
from plugins.auth import service as auth

from . import keyformat, usage
from .models import ApiKey, ApiKeySecret

WARNING = "Save this key now: it is shown only once and cannot be recovered."
_DURATION = re.compile(r"^\s*(\d{1,6})\s*(m|min|minutes?|h|hours?|d|days?|w|weeks?)\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_LIFETIME = timedelta(days=3650)


# --- settings ------------------------------------------------------------------------

def parse_duration(value: str, field: str) -> timedelta:
    match = _DURATION.match(value or "")
    if not match:
        raise ValidationFailed({field: ["Use a number and a unit, e.g. '90d', '12h', '30m' or '2w'."]})
    amount, unit = int(match.group(1)), match.group(2)[0].lower()
    delta = timedelta(**{_UNITS[unit]: amount})
    if delta <= timedelta(0) or delta > MAX_LIFETIME:
        raise ValidationFailed({field: ["Must be positive and at most 10 years."]})
    return delta


def _expiry(expires_in: str | None, expires_at: datetime | None) -> datetime | None:
    if expires_in and expires_at:
        raise ValidationFailed({"expires_in": ["Give expires_in or expires_at, not both."]})
    if expires_in:
        # Not returned at once: the server's maximum lifetime below applies to both spellings.
        expires_at = utcnow() + parse_duration(expires_in, "expires_in")
    elif expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValidationFailed({"expires_at": ["Include a time zone (e.g. a trailing Z)."]})
        if expires_at <= utcnow():
            raise ValidationFailed({"expires_at": ["Must be in the future."]})
        if expires_at - utcnow() > MAX_LIFETIME:
            raise ValidationFailed({"expires_at": ["At most 10 years ahead."]})
    max_days = current_app.config["KEYS_MAX_LIFETIME_DAYS"]
    limit = utcnow() + timedelta(days=max_days) if max_days else None
    if limit and (expires_at is None or expires_at > limit):
        raise ValidationFailed({"expires_in": [f"Keys on this server expire within {max_days} days; set an expiry."]})
    return expires_at


def _check_rate_limit(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_many(value)
    except ValueError as error:
        raise ValidationFailed({"rate_limit": ["Use a limit such as '1000/15 minutes' or '100/hour'."]}) from error
    return value


def _check_scopes(requested: list[str], ceiling: Principal) -> list[str]:
    declared = registry().scopes
    unknown = sorted(set(requested) - set(declared))
    if unknown:
        raise ValidationFailed({"scopes": [f"Unknown scope(s): {', '.join(unknown)}. See GET /v1/api-keys/scopes."]})
    for scope in requested:
        if not ceiling.has_scope(scope):
            raise Forbidden(f"You cannot grant {scope!r}: a key never gets a scope its creator lacks.",
                            code="INSUFFICIENT_SCOPE", details={"required_scope": scope})
    return sorted(set(requested))


def _check_projects(requested: list[str] | None, ceiling: Principal) -> list[str] | None:
    """A key restricted to some projects only creates keys restricted to (some of) them;
    asking for no restriction inherits the creator's."""
    if ceiling.allowed_projects is None:
        return sorted(set(requested)) if requested is not None else None
    if requested is None:
        return sorted(set(ceiling.allowed_projects))
    outside = sorted(set(requested) - set(ceiling.allowed_projects))
    if outside:
        raise Forbidden(f"You cannot grant access to project {outside[0]!r}: a key never reaches a project "
                        "its creator cannot.", code="PROJECT_NOT_ALLOWED",
                        details={"project_id": outside[0], "allowed_projects": list(ceiling.allowed_projects)})
    return sorted(set(requested))


def _check_rotation(key: ApiKey, caller: Principal) -> None:
    """Rotating hands out a working secret: a key may only rotate keys that can do no more than it can.
    (The owner's session may rotate any of its keys: a key never acts beyond its owner's role.)"""
    if caller.kind != "key":
        return
    for scope in key.scopes or ():
        if not caller.has_scope(scope):
            raise Forbidden(f"This key cannot rotate a key with {scope!r}, a scope it lacks.",
                            code="INSUFFICIENT_SCOPE", details={"required_scope": scope})
    if caller.allowed_projects is not None:
        outside = ["*"] if key.allowed_projects is None else sorted(set(key.allowed_projects)
                                                                     - set(caller.allowed_projects))
        if outside:
            raise Forbidden("This key cannot rotate a key that reaches projects it cannot.",
                            code="PROJECT_NOT_ALLOWED",
                            details={"project_id": outside[0], "allowed_projects": list(caller.allowed_projects)})


def _digest(token: str) -> str:
    pepper = current_app._get_current_object().config["KEYS_PEPPER"].encode()
    return hmac.digest(pepper, token.encode(), "sha256").hex()  # one-shot: no HMAC object per request


def _session_principal(user_id: str) -> Principal:
    """A user's own ceiling: the scopes of their role."""
    state, _, _ = auth.user_state(user_id)
    if state is None:
        raise NotFound()
    return Principal(kind="user", id=user_id, user_id=user_id, role=state.role, tier=state.tier,
                     scopes=auth.user_scopes(state))


# --- issue, rotate, revoke -----------------------------------------------------------

def create(principal: Principal, *, name: str, scopes: list[str], description: str | None = None,
           expires_in: str | None = None, expires_at: datetime | None = None, rate_limit: str | None = None,
           allowed_projects: list[str] | None = None, tags: list[str] | None = None,
           environment: str = "live") -> tuple[ApiKey, str]:
    """A new key owned by the caller; its scopes never exceed the caller's own."""
    user_id = principal.user_id or ""
    granted = _check_scopes(scopes, principal)
    projects = _check_projects(allowed_projects, principal)
    active = db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey)
                               .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))) or 0
    if active >= int(current_app.config["KEYS_MAX_PER_USER"]):
        raise Conflict(f"You have {active} active keys, the most allowed; revoke one first.",
                       code="KEY_LIMIT_REACHED")
    expiry = _expiry(expires_in, expires_at)
    if principal.key_id:
        # A key made by a key dies with it at the latest: no credential outlives its creator.
        creator = db.session.get(ApiKey, principal.key_id)
        if creator is not None and creator.expires_at is not None and (expiry is None or expiry > creator.expires_at):
            expiry = creator.expires_at
    token = keyformat.generate(environment)
    head, tail = keyformat.masked(token)
    key = ApiKey(user_id=user_id, name=name, description=description, environment=environment, scopes=granted,
                 allowed_projects=projects, tags=sorted(set(tags or [])), rate_limit=_check_rate_limit(rate_limit),
                 expires_at=expiry, mask_head=head, mask_tail=tail)
    key.secrets.append(ApiKeySecret(digest=_digest(token)))
    db.session.add(key)
    db.session.commit()
    events.publish("keys.created", {"key_id": key.id, "name": name, "scopes": granted,
                                    "environment": environment}, owner=user_id)
    return key, token


def create_for_user(user_id: str, **settings: Any) -> tuple[ApiKey, str]:
    """For the CLI: a key for any user, bounded by that user's role."""
    return create(_session_principal(user_id), **settings)


def rotate(user_id: str | None, key_id: str, grace: str | None = None,
           caller: Principal | None = None) -> tuple[ApiKey, str]:
    key = _owned(user_id, key_id)
    if caller is not None:
        _check_rotation(key, caller)
    if key.status != "active":
        raise Conflict(f"This key is {key.status}; only an active key can be rotated.", code="KEY_NOT_ACTIVE")
    grace_period = parse_duration(grace, "grace_period") if grace else timedelta(0)
    if grace_period > timedelta(days=7):
        raise ValidationFailed({"grace_period": ["At most 7 days."]})
    now = utcnow()
    for secret in key.secrets:
        if secret.expires_at is None or secret.expires_at > now + grace_period:
            secret.expires_at = now + grace_period
    token = keyformat.generate(key.environment)
    key.mask_head, key.mask_tail = keyformat.masked(token)
    key.secrets.append(ApiKeySecret(digest=_digest(token)))
    db.session.commit()
    auth.authorisation_changed(key.user_id)
    events.publish("keys.rotated", {"key_id": key.id, "grace_seconds": int(grace_period.total_seconds())},
                   owner=key.user_id)
    return key, token


def revoke(user_id: str | None, key_id: str, actor: str | None = None) -> ApiKey:
    """`user_id` None: an admin revoking anyone's key."""
    key = _owned(user_id, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.revoked_by = actor or user_id
        db.session.commit()
        auth.authorisation_changed(key.user_id)
        events.publish("keys.revoked", {"key_id": key.id, "name": key.name}, owner=key.user_id, actor=actor)
    return key


def _owned(user_id: str | None, key_id: str) -> ApiKey:
    key = db.session.get(ApiKey, key_id)
    if key is None or (user_id is not None and key.user_id != user_id):
        raise NotFound()
    return key


# --- reading -------------------------------------------------------------------------

def _view(key: ApiKey, pending: usage.Counts | None) -> dict[str, Any]:
    last_used = key.last_used_at
    requests, errors = key.request_count, key.error_count
    if pending is not None:
        requests += pending.requests
        errors += pending.errors
        if pending.last_used:
            seen = datetime.fromtimestamp(pending.last_used, tz=UTC)
            last_used = max(last_used, seen) if last_used else seen
    return {
        "id": key.id, "user_id": key.user_id, "name": key.name, "description": key.description,
        "environment": key.environment, "masked_key": key.masked, "scopes": key.scopes,
        "allowed_projects": key.allowed_projects, "tags": key.tags, "rate_limit": key.rate_limit,
        "status": key.status, "expires_at": key.expires_at, "revoked_at": key.revoked_at,
        "created_at": key.created_at, "last_used_at": last_used,
        "usage": {"requests": requests, "errors": errors},
    }


def views(keys: list[ApiKey]) -> list[dict[str, Any]]:
    pending = usage.pending_for([k.id for k in keys])
    return [_view(k, pending.get(k.id)) for k in keys]


def view(key: ApiKey) -> dict[str, Any]:
    return views([key])[0]


def _status_filter(query: sa.Select, status: str | None) -> sa.Select:
    now = utcnow()
    if status == "active":
        return query.where(ApiKey.revoked_at.is_(None), sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
    if status == "revoked":
        return query.where(ApiKey.revoked_at.is_not(None))
    if status == "expired":
        return query.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    return query


def list_keys(user_id: str | None, page: int, per_page: int, status: str | None = None,
              environment: str | None = None, tag: str | None = None) -> Page:
    query = sa.select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    if environment:
        query = query.where(ApiKey.environment == environment)
    if tag:
        query = query.where(_has_tag(tag))
    result = paginate(_status_filter(query, status), page, per_page)
    result.items = views(list(result.items))
    return result


def _has_tag(tag: str) -> sa.ColumnElement[bool]:
    # JSON array membership is spelled differently on each backend.
    if db.engine.dialect.name == "postgresql":
        return sa.cast(ApiKey.tags, JSONB).contains([tag])
    return sa.text("EXISTS (SELECT 1 FROM json_each(api_keys.tags) WHERE json_each.value = :tag)").bindparams(tag=tag)


def get(user_id: str | None, key_id: str) -> dict[str, Any]:
    return view(_owned(user_id, key_id))


def scope_catalog(principal: Principal) -> list[dict[str, Any]]:
    return [{"scope": name, "description": info["description"], "plugin": info["plugin"],
             "grantable": principal.has_scope(name)}
            for name, info in sorted(registry().scopes.items())]


def stats() -> dict[str, Any]:
    usage.flush()
    usage.persist_from_redis()
    now = utcnow()
    count = sa.func.count(ApiKey.id)
    total, revoked = db.session.execute(sa.select(count, sa.func.count(ApiKey.revoked_at))).one()
    expired = db.session.scalar(sa.select(count).where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)) or 0
    requests, errors = db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(ApiKey.request_count), 0),
                  sa.func.coalesce(sa.func.sum(ApiKey.error_count), 0))).one()
    by_env = dict(db.session.execute(sa.select(ApiKey.environment, count).group_by(ApiKey.environment)).all())
    top = db.session.scalars(sa.select(ApiKey).order_by(ApiKey.request_count.desc(), ApiKey.id).limit(10)).all()
    return {
        "total": total, "active": total - revoked - expired, "revoked": revoked, "expired": expired,
        "by_environment": {env: int(by_env.get(env, 0)) for env in keyformat.ENVIRONMENTS},
        "requests": int(requests), "errors": int(errors),
        "top_keys": [{"id": k.id, "name": k.name, "user_id": k.user_id, "requests": k.request_count}
                     for k in top if k.request_count],
    }


# --- verification (the credential resolver) ------------------------------------------

@dataclass(frozen=True, slots=True)
class Snapshot:
    key_id: str
    user_id: str
    scopes: frozenset[str]
    allowed_projects: tuple[str, ...] | None
    rate_limit: str | None
    expires_at: datetime | None
    secret_expires_at: datetime | None
    revoked: bool

    @property
    def usable_until(self) -> float:
        """Epoch seconds after which the key (or this secret of it) no longer works."""
        ends = [moment.timestamp() for moment in (self.expires_at, self.secret_expires_at) if moment is not None]
        return min(ends, default=math.inf)


@dataclass(frozen=True, slots=True)
class _Verified:
    """A key as last verified: valid while its owner's version token is unchanged."""

    version: bytes
    snapshot: Snapshot
    until: float  # snapshot.usable_until
    # What the resolver returns while the owner's state is the one it was built from; None
    # for a key that is refused (revoked, disabled owner), whose error is worked out each time.
    principal: Principal | None


class _Cache:
    """Verified keys by digest."""

    MAX = 50_000

    def __init__(self) -> None:
        self.entries: OrderedDict[str, _Verified] = OrderedDict()
        self.unknown: dict[str, float] = {}  # digests with no key: brief negative cache
        self.lock = threading.Lock()

    def put(self, digest: str, entry: _Verified) -> None:
        with self.lock:
            self.entries[digest] = entry
            self.entries.move_to_end(digest)
            while len(self.entries) > self.MAX:
                self.entries.popitem(last=False)


def _cache() -> _Cache:
    return per_app("lunaos.keys.cache", _Cache)


def _load(digest: str) -> Snapshot | None:
    row = db.session.execute(sa.select(ApiKey, ApiKeySecret.expires_at).join(ApiKeySecret)
                             .where(ApiKeySecret.digest == digest)).first()
    if row is None:
        return None
    key, secret_expires_at = row
    return Snapshot(key.id, key.user_id, frozenset(key.scopes or ()),
                    tuple(key.allowed_projects) if key.allowed_projects is not None else None,
                    key.rate_limit, key.expires_at, secret_expires_at, key.revoked_at is not None)


def _epoch() -> float:
    """Now, in epoch seconds: what verification compares expiry with (utcnow's float twin)."""
    return time.time()


def _unknown_key() -> Unauthorized:
    return Unauthorized("This API key is not valid.", code="KEY_INVALID")


def resolve_key(token: str) -> Principal | None:
    """Credential resolver for `lnos_...` keys (registered in the core by init_app).

    A key verified before costs one HMAC, one dict lookup and the owner's version
    check (auth.user_state); anything else reloads it from the database.
    """
    if not token.startswith("lnos_"):
        return None
    digest = _digest(token)
    cache = _cache()
    entry = cache.entries.get(digest)
    if entry is None:
        # Only well-formed keys are ever cached: a hit needs no checksum.
        if not keyformat.is_well_formed(token):
            raise Unauthorized("This API key is malformed (its checksum does not match); check it was copied "
                               "whole.", code="KEY_INVALID")
        if cache.unknown.get(digest, 0) > time.monotonic():
            raise _unknown_key()
        snapshot = _load(digest)
        if snapshot is None:
            with cache.lock:
                if len(cache.unknown) > 10_000:
                    cache.unknown.clear()
                cache.unknown[digest] = time.monotonic() + 60
            raise _unknown_key()
        user_id = snapshot.user_id
    else:
        user_id = entry.snapshot.user_id
    state, _, version = auth.user_state(user_id)
    if entry is not None and version is not None and entry.version == version:
        if entry.principal is not None and _epoch() < entry.until:
            return entry.principal
        snapshot = entry.snapshot
    else:
        # (Re)load after reading the version: a change committed meanwhile changes it again.
        snapshot = _load(digest)
        if snapshot is None:
            raise _unknown_key()
        entry = None
    principal = _principal(snapshot, state)
    if entry is None and version is not None:
        cache.put(digest, _Verified(version, snapshot, snapshot.usable_until, principal))
    if principal is None:
        _refuse(snapshot, state)  # raises
    now = _epoch()
    if now >= snapshot.usable_until:
        _refuse_expired(snapshot, now)
    return principal


def _principal(snapshot: Snapshot, state: auth.UserState | None) -> Principal | None:
    """The key's principal, or None when the key or its owner is refused whatever the time."""
    if state is None or state.disabled or snapshot.revoked:
        return None
    ceiling = auth.user_scopes(state)
    scopes = snapshot.scopes if "*" in ceiling else snapshot.scopes & ceiling
    return Principal(kind="key", id=snapshot.key_id, user_id=snapshot.user_id, role=state.role, tier=state.tier,
                     scopes=frozenset(scopes), rate_limit=snapshot.rate_limit, key_id=snapshot.key_id,
                     allowed_projects=snapshot.allowed_projects,
                     extra=MappingProxyType({auth.STATE_EXTRA: state}))  # shared by requests: read-only


def _refuse(snapshot: Snapshot, state: auth.UserState | None) -> None:
    if state is None or state.disabled:
        raise Unauthorized("The account owning this key is disabled.", code="ACCOUNT_DISABLED")
    if snapshot.revoked:
        raise Unauthorized("This API key has been revoked.", code="KEY_REVOKED")


def _refuse_expired(snapshot: Snapshot, now: float) -> None:
    if snapshot.secret_expires_at is not None and snapshot.secret_expires_at.timestamp() <= now:
        raise Unauthorized("This API key was rotated; use its replacement.", code="KEY_REVOKED")
    raise Unauthorized("This API key has expired.", code="KEY_EXPIRED")
