"""Accounts, sessions and MFA. Other plugins use this module (and only this one).

No Flask request objects here: callers pass the client IP when it matters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app import events
from app.errors import ApiError, Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from app.extensions import db
from app.http import Page, paginate
from app.ids import utcnow
from app.security import ANONYMOUS_KIND, Principal, role_scopes

from . import mfa, passwords, state, throttle, tokens
from .models import ROLES, TIERS, User
from .state import UserState

INVALID_CREDENTIALS = "Email or password is incorrect."


@dataclass
class Session:
    user: User
    tokens: dict[str, Any]


# --- lookups other plugins use -------------------------------------------------------

def get_user(user_id: str) -> User | None:
    return db.session.get(User, user_id)


def find_by_email(email: str) -> User | None:
    try:
        email = passwords.normalise_email(email)
    except ValueError:
        return None
    return db.session.scalar(sa.select(User).where(User.email == email))


def user_state(user_id: str, session_id: str | None = None) -> tuple[UserState | None, bool, bytes | None]:
    """Cached authorisation state of a user, whether `session_id` is revoked, and the
    version token that changes whenever the user's authorisation does (None without Redis)."""
    return state.lookup(user_id, session_id)


# Principal.extra key under which resolvers leave the UserState they checked, so the same
# request does not look it up again (GET /v1/auth/me).
STATE_EXTRA = "auth.user_state"


def user_scopes(user: User | UserState) -> frozenset[str]:
    return role_scopes(user.role)


def authorisation_changed(user_id: str) -> None:
    """Invalidate cached authorisation of this user on every worker (keys call this too)."""
    state.changed(user_id)


# --- sign-up, login, sessions --------------------------------------------------------

def _email_or_422(raw: str) -> str:
    try:
        return passwords.normalise_email(raw)
    except ValueError as error:
        raise ValidationFailed({"email": [str(error)]}) from error


def _check_policy(password: str, email: str, field: str = "password") -> None:
    problems = passwords.policy_problems(password, email)
    if problems:
        raise ValidationFailed({field: problems}, "The password does not meet the password policy.")


def create_user(email: str, password: str, *, name: str | None = None, role: str = "user",
                tier: str = "free") -> User:
    email = _email_or_422(email)
    _check_policy(password, email)
    if role not in ROLES or tier not in TIERS:
        raise ValidationFailed({"role" if role not in ROLES else "tier": ["Unknown value."]})
    if db.session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise Conflict("An account with this email already exists.", code="EMAIL_TAKEN")
    user = User(email=email, name=name, role=role, tier=tier,
                password_hash=passwords.hash_password(password), password_changed_at=utcnow())
    db.session.add(user)
    try:
        db.session.commit()
    except sa.exc.IntegrityError as error:  # a concurrent sign-up won the race
        db.session.rollback()
        raise Conflict("An account with this email already exists.", code="EMAIL_TAKEN") from error
    events.publish("auth.signup", {"email": email, "role": role}, owner=user.id, actor=user.id)
    return user


def signup(email: str, password: str, name: str | None = None) -> Session:
    user = create_user(email, password, name=name)
    return Session(user, tokens.issue(user.id))


def login(email: str, password: str, ip: str, mfa_code: str | None = None) -> Session:
    try:
        email = passwords.normalise_email(email)
    except ValueError:
        email = email.strip().lower()[:320]
    throttle.check(email, ip)
    user = db.session.scalar(sa.select(User).where(User.email == email))
    # Verify even for unknown emails so timing does not reveal which accounts exist.
    ok = passwords.verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        throttle.failed(email, ip)
        events.publish("auth.login.failed", {"email": email, "ip": ip}, owner=user.id if user else None,
                       actor=user.id if user else None)
        raise Unauthorized(INVALID_CREDENTIALS, code="INVALID_CREDENTIALS")
    if user.mfa_enabled:
        if not mfa_code:
            raise Unauthorized("This account needs a one-time code: send `mfa_code` with the login.",
                               code="MFA_REQUIRED")
        step = mfa.accepted_step(mfa.unseal(user.mfa_secret or ""), mfa_code, user.mfa_last_step)
        if step is None:
            throttle.failed(email, ip)
            events.publish("auth.login.failed", {"email": email, "ip": ip, "reason": "mfa"}, owner=user.id,
                           actor=user.id)
            raise Unauthorized("The one-time code is not valid.", code="MFA_INVALID")
        user.mfa_last_step = step
    throttle.succeeded(email)
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    user.last_login_at = utcnow()
    db.session.commit()
    events.publish("auth.login.succeeded", {"email": email, "ip": ip}, owner=user.id, actor=user.id)
    return Session(user, tokens.issue(user.id))


def refresh(refresh_token: str) -> Session:
    claims = tokens.decode(refresh_token, "refresh")
    user_state_, revoked, _ = user_state(claims["sub"], claims["sid"])
    _refuse_unusable(user_state_, revoked, claims)
    user = get_user(claims["sub"])
    assert user is not None
    issued = tokens.issue(user.id, session_id=claims["sid"])
    issued.pop("refresh_token")  # the refresh token stays the same until it expires
    return Session(user, issued)


def _refuse_unusable(user_state_: UserState | None, revoked: bool, claims: dict[str, Any]) -> UserState:
    if user_state_ is None:
        raise Unauthorized("The token is not valid.", code="TOKEN_INVALID")
    if user_state_.disabled:
        raise Unauthorized("This account is disabled.", code="ACCOUNT_DISABLED")
    if revoked or tokens.issued_before(claims, user_state_.sessions_valid_after):
        raise Unauthorized("This session has been revoked; log in again.", code="TOKEN_REVOKED")
    return user_state_


def resolve_access_token(token: str) -> Principal | None:
    """Credential resolver for session tokens (registered in the core by init_app)."""
    if not tokens.looks_like_jwt(token):
        return None
    claims = tokens.decode(token, "access")
    found, revoked, _ = user_state(claims["sub"], claims["sid"])
    current = _refuse_unusable(found, revoked, claims)
    return Principal(kind="user", id=current.id, user_id=current.id, role=current.role, tier=current.tier,
                     scopes=role_scopes(current.role), extra={"session_id": claims["sid"], STATE_EXTRA: current})


def logout(principal: Principal) -> None:
    session_id = principal.extra.get("session_id")
    if not session_id:
        raise ApiError("Only a session token can be logged out; revoke an API key instead.",
                       code="NOT_A_SESSION", status=400)
    state.revoke_session(principal.user_id or "", session_id, utcnow() + tokens.refresh_lifetime())
    events.publish("auth.logout", {"session_id": session_id}, owner=principal.user_id)


def change_password(principal: Principal, current_password: str, new_password: str) -> Session:
    user = _session_user(principal)
    if not passwords.verify_password(user.password_hash, current_password):
        raise Unauthorized("The current password is incorrect.", code="INVALID_CREDENTIALS")
    _check_policy(new_password, user.email, field="new_password")
    if passwords.verify_password(user.password_hash, new_password):
        raise ValidationFailed({"new_password": ["Choose a password different from the current one."]})
    now = utcnow()
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = now
    user.sessions_valid_after = now  # every token issued before now stops working
    db.session.commit()
    state.changed(user.id)
    events.publish("auth.password.changed", {}, owner=user.id, actor=user.id)
    return Session(user, tokens.issue(user.id))


def current_user(principal: Principal) -> User:
    user = get_user(principal.user_id or "") if principal.kind != ANONYMOUS_KIND else None
    if user is None:
        raise Unauthorized()
    return user


def profile(principal: Principal) -> UserState:
    """The caller's account as GET /v1/auth/me shows it, from the cached state (the one the
    caller's credential was checked against in this request, when its resolver left it)."""
    found = principal.extra.get(STATE_EXTRA) if principal.authenticated else None
    if found is None and principal.authenticated:
        found, _, _ = user_state(principal.user_id or "")
    if found is None:
        raise Unauthorized()
    return found


def _session_user(principal: Principal) -> User:
    """The account itself (password, MFA) is changed from a logged-in session only: an API key,
    whatever its scopes, must not turn on MFA (locking its owner out) or replace the password."""
    if principal.kind != "user":
        raise Forbidden("Changing the password or MFA needs a logged-in session, not an API key.",
                        code="SESSION_REQUIRED")
    return current_user(principal)


# --- MFA -----------------------------------------------------------------------------

def mfa_enroll(principal: Principal, password: str) -> dict[str, str]:
    """The password is asked again: a stolen session alone must not be able to turn MFA on
    with the thief's device and lock the owner out."""
    user = _session_user(principal)
    if not passwords.verify_password(user.password_hash, password):
        raise Unauthorized("The password is incorrect.", code="INVALID_CREDENTIALS")
    if user.mfa_enabled:
        raise Conflict("MFA is already enabled; disable it first to enrol a new device.", code="MFA_ALREADY_ENABLED")
    secret = mfa.new_secret()
    user.mfa_secret = mfa.seal(secret)
    user.mfa_last_step = None
    db.session.commit()
    events.publish("auth.mfa.enrolled", {}, owner=user.id, actor=user.id)
    issuer = current_app.config["AUTH_MFA_ISSUER"]
    return {"secret": secret, "otpauth_uri": mfa.uri(secret, user.email, issuer)}


def mfa_verify(principal: Principal, code: str) -> User:
    user = _session_user(principal)
    if not user.mfa_secret:
        raise Conflict("Start with POST /v1/auth/mfa/enroll.", code="MFA_NOT_ENROLLED")
    step = mfa.accepted_step(mfa.unseal(user.mfa_secret), code, user.mfa_last_step)
    if step is None:
        raise ValidationFailed({"code": ["The one-time code is not valid."]})
    user.mfa_last_step = step
    user.mfa_enabled = True
    db.session.commit()
    state.changed(user.id)
    events.publish("auth.mfa.enabled", {}, owner=user.id, actor=user.id)
    return user


def mfa_disable(principal: Principal, password: str, code: str) -> User:
    user = _session_user(principal)
    if not user.mfa_enabled:
        raise Conflict("MFA is not enabled.", code="MFA_NOT_ENABLED")
    if not passwords.verify_password(user.password_hash, password):
        raise Unauthorized("The password is incorrect.", code="INVALID_CREDENTIALS")
    if mfa.accepted_step(mfa.unseal(user.mfa_secret or ""), code, user.mfa_last_step) is None:
        raise ValidationFailed({"code": ["The one-time code is not valid."]})
    user.mfa_enabled, user.mfa_secret, user.mfa_last_step = False, None, None
    db.session.commit()
    state.changed(user.id)
    events.publish("auth.mfa.disabled", {}, owner=user.id, actor=user.id)
    return user


def verify_mfa_code(user_id: str, code: str) -> bool:
    """For other plugins (vault: secrets that require MFA). Consumes the code."""
    user = get_user(user_id)
    if user is None or not user.mfa_enabled or not user.mfa_secret:
        return False
    step = mfa.accepted_step(mfa.unseal(user.mfa_secret), code, user.mfa_last_step)
    if step is None:
        return False
    user.mfa_last_step = step
    db.session.commit()
    return True


# --- administration ------------------------------------------------------------------

def list_users(page: int, per_page: int, search: str | None = None, role: str | None = None,
               tier: str | None = None, disabled: bool | None = None) -> Page:
    query = sa.select(User).order_by(User.created_at.desc(), User.id.desc())
    if search:
        query = query.where(sa.or_(User.email.contains(search.lower(), autoescape=True),
                                   User.name.ilike(f"%{search}%")))
    for column, value in ((User.role, role), (User.tier, tier), (User.disabled, disabled)):
        if value is not None:
            query = query.where(column == value)
    return paginate(query, page, per_page)


def update_user(user_id: str, changes: dict[str, Any], actor: Principal | None = None) -> User:
    user = get_user(user_id)
    if user is None:
        raise NotFound()
    demoting = changes.get("role") not in (None, "admin") or changes.get("disabled") is True
    if user.role == "admin" and demoting and _admin_count() <= 1:
        raise Conflict("This is the last active admin; promote another admin first.", code="LAST_ADMIN")
    before = {k: getattr(user, k) for k in changes}
    for field, value in changes.items():
        setattr(user, field, value)
    db.session.commit()
    state.changed(user.id)
    events.publish("admin.user.updated", {"user_id": user.id, "before": before, "after": changes},
                   owner=user.id, actor=actor.user_id if actor else None)
    return user


def set_tier(user_id: str, tier: str) -> User:
    """Billing sets the tier from subscription state."""
    if tier not in TIERS:
        raise ValidationFailed({"tier": [f"Must be one of {', '.join(TIERS)}."]})
    return update_user(user_id, {"tier": tier})


def _admin_count() -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(User).where(User.role == "admin", User.disabled.is_(False))) or 0
