"""Opaque, prefixed, time-sortable identifiers and UTC time helpers."""
from __future__ import annotations

import base64
import os
import random
import time
from datetime import datetime, UTC

# Crockford base32: no I, L, O, U, so ids survive being read aloud or retyped.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


# RFC 4648 base32 symbols -> the Crockford symbol of the same value (so order is kept).
_FROM_RFC = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def _encode(ms: int, rand: int) -> str:
    # 26 symbols = 130 bits: 2 zero bits, 48 bits of ms, 80 random bits. Shifted to fill
    # 17 bytes so the C encoder's first 26 symbols are exactly those 130 bits.
    raw = ((ms << 80 | rand) << 6).to_bytes(17, "big")
    return base64.b32encode(raw)[:26].translate(_FROM_RFC).decode()


def new_id(prefix: str) -> str:
    """`prefix_` + 26 characters: 48 bits of milliseconds then 80 random bits.

    Ids sort by creation time (good index locality, stable pagination) and
    cannot be guessed from one another.
    """
    ms = int(time.time() * 1000) & ((1 << 48) - 1)
    return f"{prefix}_{_encode(ms, int.from_bytes(os.urandom(10), 'big'))}"


def new_request_id() -> str:
    """Like new_id("req"), from the non-cryptographic generator: a request id must be
    unique, not secret, and os.urandom is a system call on every request. (Python
    re-seeds `random` in each forked worker.)"""
    ms = int(time.time() * 1000) & ((1 << 48) - 1)
    return f"req_{_encode(ms, random.getrandbits(80))}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a `Z`, millisecond precision."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
