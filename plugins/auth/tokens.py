"""Session tokens: a short-lived access JWT and a refresh JWT sharing a session id.

Logout revokes the session id, which kills both tokens at once; a password
change moves the user's `sessions_valid_after`, which kills every older token.
Only HS256 is accepted on decode, so `alg: none` and algorithm swaps fail.

`iat` has one-second resolution, so tokens also carry `iat_ms` (milliseconds):
a password change must kill a token issued earlier in the same second while the
session it hands out, issued a moment later, keeps working.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, UTC
import threading
from collections import OrderedDict
from typing import Any

import jwt as pyjwt
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException

from app.errors import Unauthorized
from app.ids import new_id
from app.extensions import per_app


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def issue(user_id: str, session_id: str | None = None) -> dict[str, Any]:
    session_id = session_id or new_id("ses")
    claims = {"sid": session_id, "iat_ms": int(time.time() * 1000)}
    access = create_access_token(identity=user_id, additional_claims=claims)
    refresh = create_refresh_token(identity=user_id, additional_claims=claims)
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": int(access_lifetime().total_seconds()),
    }


def access_lifetime() -> timedelta:
    return current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]


def refresh_lifetime() -> timedelta:
    return current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]


class _Verified:
    """Claims of tokens whose signature this process has checked, by exact token string.

    A session token is presented on every request for its whole life; checking its
    signature once per process (flask-jwt-extended and PyJWT parse it three times,
    about 300 us) is enough. Expiry is still checked on every use, and revocation is
    decided elsewhere on every request (state.lookup).
    """

    MAX = 50_000

    def __init__(self) -> None:
        self.claims: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, token: str) -> dict[str, Any] | None:
        return self.claims.get(token)

    def put(self, token: str, claims: dict[str, Any]) -> None:
        with self.lock:
            self.claims[token] = claims
            while len(self.claims) > self.MAX:
                self.claims.popitem(last=False)


def _verified() -> _Verified:
    return per_app("lunaos.auth.verified", _Verified)


def _expired() -> Unauthorized:
    return Unauthorized("The token has expired; refresh it or log in again.", code="TOKEN_EXPIRED")


def decode(token: str, expected_type: str) -> dict[str, Any]:
    """Verified claims, or 401 saying what is wrong (expired, invalid, wrong kind)."""
    cache = _verified()
    claims = cache.get(token)
    if claims is not None:
        if claims["exp"] <= time.time():
            raise _expired()
    else:
        try:
            claims = decode_token(token)
        except pyjwt.ExpiredSignatureError as error:
            raise _expired() from error
        except (pyjwt.PyJWTError, JWTExtendedException, ValueError, KeyError) as error:
            raise Unauthorized("The token is not valid.", code="TOKEN_INVALID") from error
        if isinstance(claims.get("exp"), int):
            cache.put(token, claims)
    if claims.get("type") != expected_type:
        raise Unauthorized(f"A {claims.get('type')} token cannot be used here; send the {expected_type} token.",
                           code="TOKEN_INVALID")
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("sid"), str):
        raise Unauthorized("The token is not valid.", code="TOKEN_INVALID")
    return claims


def issued_before(claims: dict[str, Any], instant: datetime | None) -> bool:
    if instant is None:
        return False
    issued_ms = claims.get("iat_ms")
    if isinstance(issued_ms, int) and not isinstance(issued_ms, bool):
        return issued_ms < int(instant.timestamp() * 1000)
    # A token minted before `iat_ms` existed: one-second resolution is all there is.
    return int(claims["iat"]) < int(instant.timestamp())


def expiry(claims: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
