"""TOTP (RFC 6238) enrolment and verification, with replay protection."""
from __future__ import annotations

import hmac
import time

import pyotp

from app import crypto

PURPOSE = "auth.totp"
STEP = 30


def new_secret() -> str:
    return pyotp.random_base32()


def seal(secret: str) -> str:
    return crypto.seal(secret, PURPOSE)


def unseal(sealed: str) -> str:
    return crypto.unseal(sealed, PURPOSE)


def uri(secret: str, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def accepted_step(secret: str, code: str, last_step: int | None, now: float | None = None) -> int | None:
    """The time step `code` is valid for (one step of clock drift either way), unless
    that step or an earlier one was already used."""
    code = (code or "").strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if now is None else now
    current = int(now // STEP)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.at(step * STEP), code) and (last_step is None or step > last_step):
            return step
    return None
