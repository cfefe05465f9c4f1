"""Authenticated encryption for small secrets kept in the database (e.g. TOTP seeds).

AES-256-GCM with a key derived from SECRET_KEY per purpose (HKDF), so a
value sealed for one purpose cannot be opened as another. The vault has its
own keyring; this is for the core and plugins' incidental secrets.
"""
from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

_VERSION = b"\x01"


class DecryptionError(ValueError):
    pass


def _key(purpose: str) -> bytes:
    secret = current_app.config["SECRET_KEY"].encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"lunaos-seal", info=purpose.encode()).derive(secret)


def seal(plaintext: str, purpose: str) -> str:
    nonce = os.urandom(12)
    ciphertext = AESGCM(_key(purpose)).encrypt(nonce, plaintext.encode(), purpose.encode())
    return base64.urlsafe_b64encode(_VERSION + nonce + ciphertext).decode()


def unseal(token: str, purpose: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token.encode())
        if raw[:1] != _VERSION:
            raise DecryptionError("unknown format")
        return AESGCM(_key(purpose)).decrypt(raw[1:13], raw[13:], purpose.encode()).decode()
    except (InvalidTag, ValueError) as error:
        raise DecryptionError("cannot decrypt (wrong SECRET_KEY or corrupted value)") from error
