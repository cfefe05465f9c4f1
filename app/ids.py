"""Opaque, prefixed, time-sortable identifiers and UTC time helpers."""
from __future__ import annotations

import os
import random
import time
from datetime import datetime, UTC

# Crockford base32: no I, L, O, U, so ids survive being read aloud or retyped.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


# Every 10-bit value as its two symbols: an id is 13 table lookups (base64.b32encode is
# a Python loop in 3.11, and was most of the cost of the request id made per request).
_PAIRS = tuple(high + low for high in _ALPHABET for low in _ALPHABET)
_SHIFTS = tuple(range(120, -1, -10))


def _encode(ms: int, rand: int) -> str:
    # 26 symbols = 130 bits: 2 zero bits, 48 bits of ms, 80 random bits, most significant
    # first, so ids sort as their times do.
    value = ms << 80 | rand
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


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


# Text of recently formatted times: the same few (a user's created_at, a key's expiry) are
# written on request after request, and a lookup costs a twentieth of formatting one.
_FORMATTED: dict[datetime, str] = {}


def isoformat(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a `Z`, millisecond precision."""
    if value is None:
        return None
    text = _FORMATTED.get(value)
    if text is not None:
        return text
    text = _format(value)
    if len(_FORMATTED) >= 4096:
        _FORMATTED.clear()
    _FORMATTED[value] = text
    return text


def _format(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # "...T12:34:56.789+00:00" (milliseconds truncated, as before) with the offset spelled Z.
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"
