"""The API key format: `lnos_<env>_<43 base62 chars: 256 random bits><6 base62 chars: CRC-32>`.

The fixed prefix lets secret scanners recognise leaked keys
(`lnos_(live|test)_[0-9A-Za-z]{49}`); the checksum lets the server refuse a
mistyped or truncated key without touching the database.
"""
from __future__ import annotations

import re
import secrets
import zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 43  # 62**43 > 2**256
CHECK_LENGTH = 6  # 62**6 > 2**32
ENVIRONMENTS = ("live", "test")
PATTERN = re.compile(rf"^lnos_(live|test)_([0-9A-Za-z]{{{BODY_LENGTH}}})([0-9A-Za-z]{{{CHECK_LENGTH}}})$")


def _base62(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(prefix_and_body: str) -> str:
    return _base62(zlib.crc32(prefix_and_body.encode()), CHECK_LENGTH)


def generate(environment: str) -> str:
    if environment not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {ENVIRONMENTS}")
    head = f"lnos_{environment}_{_base62(secrets.randbits(256), BODY_LENGTH)}"
    return head + _checksum(head)


def is_well_formed(token: str) -> bool:
    match = PATTERN.match(token)
    if match is None:
        return False
    head = token[: -CHECK_LENGTH]
    return secrets.compare_digest(_checksum(head), match.group(3))


def environment_of(token: str) -> str:
    return token.split("_", 2)[1]


def masked(token: str) -> tuple[str, str]:
    """(visible head, visible tail) for listings: `lnos_live_ab12` ... `wxyz`."""
    head_len = len("lnos_live_") + 4
    return token[:head_len], token[-4:]
