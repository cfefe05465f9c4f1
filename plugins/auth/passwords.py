"""Password hashing (argon2id), the password policy, and email normalisation."""
from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from flask import current_app

from app.concurrency import run_blocking

MIN_LENGTH = 10
MAX_LENGTH = 128  # argon2 hashes any length, but a megabyte "password" is a DoS, not a password

# The most common leaked passwords that pass the length rule; refusing them costs nothing.
COMMON = frozenset("""
password123 password1234 password12 1234567890 0123456789 qwertyuiop qwerty1234 qwerty12345
iloveyou123 1q2w3e4r5t 1qaz2wsx3edc abc1234567 abcdefghij letmein123 welcome123 welcome1234
administrator admin12345 passw0rd123 p@ssw0rd123 trustno1234 sunshine123 football123
baseball123 princess123 dragon12345 monkey12345 starwars123 whatever123 changeme123
computer123 superman123 michael123 jennifer123 1111111111 0000000000 1234512345 12345678910
qwertyuiop123 asdfghjkl1 zxcvbnm123 password!1 password2024 password2025 password2026
""".split())


def normalise_email(raw: str) -> str:
    """Validated, with the domain lowercased (IDNA) and the local part lowercased too:
    nearly every provider treats it case-insensitively, and users expect that."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(str(error)) from error
    return result.normalized.lower()


def policy_problems(password: str, email: str | None = None) -> list[str]:
    """Every rule the password breaks, in words a user can act on."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"Use at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        problems.append(f"Use at most {MAX_LENGTH} characters.")
    classes = sum([any(c.islower() for c in password), any(c.isupper() for c in password),
                   any(c.isdigit() for c in password), any(not c.isalnum() for c in password)])
    # Long passphrases are strong without symbol soup.
    if len(password) < 16 and classes < 3:
        problems.append("Mix at least three of: lowercase, uppercase, digits, symbols (or use 16+ characters).")
    if len(set(password)) < 4:
        problems.append("Use more than three different characters.")
    if password.lower() in COMMON:
        problems.append("This password is too common.")
    if email:
        local = email.split("@", 1)[0].lower()
        if len(local) >= 4 and local in password.lower():
            problems.append("Do not include your email address.")
    return problems


@lru_cache(maxsize=8)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID)


def hasher() -> PasswordHasher:
    config = current_app.config
    return _hasher(int(config["AUTH_ARGON2_TIME_COST"]), int(config["AUTH_ARGON2_MEMORY_KIB"]),
                   int(config["AUTH_ARGON2_PARALLELISM"]))


def hash_password(password: str) -> str:
    return run_blocking(hasher().hash, password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the account exists: pass None to burn a dummy verify."""
    ph = hasher()
    target = stored_hash or _dummy_hash(ph)
    try:
        ok = run_blocking(ph.verify, target, password)
    except (VerificationError, InvalidHashError):
        return False
    return bool(ok) and stored_hash is not None


def needs_rehash(stored_hash: str) -> bool:
    return hasher().check_needs_rehash(stored_hash)


_dummy: dict[tuple[int, int, int], str] = {}


def _dummy_hash(ph: PasswordHasher) -> str:
    key = (ph.time_cost, ph.memory_cost, ph.parallelism)
    if key not in _dummy:
        _dummy[key] = ph.hash("not-a-real-password-just-for-timing")
    return _dummy[key]
