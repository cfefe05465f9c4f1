"""TOTP multi-factor authentication: enrolment, login with a code, replay protection, disabling."""
from __future__ import annotations

import types
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from tests.support.identity import OTHER_PASSWORD, PASSWORD, bearer, error_of, login, login_ok, rows, signup

pytestmark = pytest.mark.db

EMAIL = "mfa-user@example.com"


class Clock:
    """A fake `time` for plugins.auth.mfa: codes are checked against a clock the test moves."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    from plugins.auth import mfa

    # Start a little after a step boundary so "the current code" is unambiguous.
    fake = Clock(1_900_000_020.0)
    monkeypatch.setattr(mfa, "time", types.SimpleNamespace(time=fake.time))
    return fake


def code(secret: str, clock: Clock, steps_ahead: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock.now + 30 * steps_ahead)


def enroll(client, session):
    response = client.post("/v1/auth/mfa/enroll", json={"password": PASSWORD}, headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def enable(client, session, clock):
    secret = enroll(client, session)["secret"]
    response = client.post("/v1/auth/mfa/verify", json={"code": code(secret, clock)}, headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    return secret


def test_enroll_returns_a_secret_and_an_otpauth_uri(client):
    session = signup(client, EMAIL)
    data = enroll(client, session)
    assert set(data) == {"secret", "otpauth_uri"}
    assert len(pyotp.TOTP(data["secret"]).byte_secret()) >= 16  # at least 128 bits
    uri = urlparse(data["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    query = parse_qs(uri.query)
    assert query["secret"] == [data["secret"]]
    assert query["issuer"] == ["LunaOS"]
    assert EMAIL in uri.path.replace("%40", "@")
    # Enrolling alone does not turn MFA on: login still works with the password only.
    assert client.get("/v1/auth/me", headers=bearer(session)).get_json()["data"]["mfa_enabled"] is False
    login_ok(client, EMAIL)


def test_verify_with_a_real_code_enables_mfa(client, clock):
    session = signup(client, EMAIL)
    secret = enroll(client, session)["secret"]
    wrong = client.post("/v1/auth/mfa/verify", json={"code": "000000" if code(secret, clock) != "000000" else "111111"},
                        headers=bearer(session))
    error_of(wrong, 422, "VALIDATION_ERROR")
    response = client.post("/v1/auth/mfa/verify", json={"code": code(secret, clock)}, headers=bearer(session))
    assert response.status_code == 200
    assert response.get_json()["data"]["mfa_enabled"] is True
    assert client.get("/v1/auth/me", headers=bearer(session)).get_json()["data"]["mfa_enabled"] is True


def test_verify_before_enroll_is_a_conflict(client):
    session = signup(client, EMAIL)
    error_of(client.post("/v1/auth/mfa/verify", json={"code": "123456"}, headers=bearer(session)), 409,
             "MFA_NOT_ENROLLED")


def test_login_then_requires_a_valid_code(client, clock):
    session = signup(client, EMAIL)
    secret = enable(client, session, clock)
    error_of(login(client, EMAIL), 401, "MFA_REQUIRED")
    wrong = "123456" if code(secret, clock, 1) != "123456" else "654321"
    error_of(login(client, EMAIL, mfa_code=wrong), 401, "MFA_INVALID")
    error_of(login(client, EMAIL, mfa_code="abc"), 401, "MFA_INVALID")
    # The wrong password with a right code is the usual invalid-credentials answer.
    error_of(login(client, EMAIL, OTHER_PASSWORD, mfa_code=code(secret, clock, 1)), 401, "INVALID_CREDENTIALS")
    clock.now += 30
    data = login_ok(client, EMAIL, mfa_code=code(secret, clock))
    assert client.get("/v1/auth/me", headers=bearer(data)).status_code == 200


def test_a_code_cannot_be_replayed(client, clock):
    session = signup(client, EMAIL)
    secret = enable(client, session, clock)
    # The code used to enable MFA is spent.
    error_of(login(client, EMAIL, mfa_code=code(secret, clock)), 401, "MFA_INVALID")
    clock.now += 30
    fresh = code(secret, clock)
    login_ok(client, EMAIL, mfa_code=fresh)
    error_of(login(client, EMAIL, mfa_code=fresh), 401, "MFA_INVALID")
    # An older code (still inside the drift window) is refused once a newer one was used.
    clock.now += 1
    error_of(login(client, EMAIL, mfa_code=code(secret, clock, -1)), 401, "MFA_INVALID")


def test_codes_far_from_the_clock_are_refused(client, clock):
    session = signup(client, EMAIL)
    secret = enable(client, session, clock)
    clock.now += 300
    for steps in (-3, 3):
        error_of(login(client, EMAIL, mfa_code=code(secret, clock, steps)), 401, "MFA_INVALID")
    login_ok(client, EMAIL, mfa_code=code(secret, clock, 1))  # one step of drift is tolerated


def test_the_totp_secret_is_not_stored_in_plain_text(client, app):
    session = signup(client, EMAIL)
    secret = enroll(client, session)["secret"]
    stored = next(r for r in rows(app, "users") if r["email"] == EMAIL)["mfa_secret"]
    assert stored
    assert secret not in stored
    assert secret.lower() not in stored.lower()
    # Decryptable only with the server's SECRET_KEY: another key cannot open it.
    from app import crypto
    from plugins.auth import mfa

    with app.app_context():
        assert mfa.unseal(stored) == secret
        app.config["SECRET_KEY"] = "another-secret-key-" + "w" * 40
        with pytest.raises(crypto.DecryptionError):
            mfa.unseal(stored)


def test_disable_needs_the_password_and_a_code(client, clock):
    session = signup(client, EMAIL)
    secret = enable(client, session, clock)
    clock.now += 30
    path = "/v1/auth/mfa/disable"
    error_of(client.post(path, json={"password": OTHER_PASSWORD, "code": code(secret, clock)},
                         headers=bearer(session)), 401, "INVALID_CREDENTIALS")
    error_of(client.post(path, json={"password": PASSWORD, "code": "000000" if code(secret, clock) != "000000"
                                     else "111111"}, headers=bearer(session)), 422, "VALIDATION_ERROR")
    error_of(client.post(path, json={"password": PASSWORD}, headers=bearer(session)), 422, "VALIDATION_ERROR")
    error_of(login(client, EMAIL), 401, "MFA_REQUIRED")  # still on
    response = client.post(path, json={"password": PASSWORD, "code": code(secret, clock)}, headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["data"]["mfa_enabled"] is False
    login_ok(client, EMAIL)
    assert next(r for r in rows(client.application, "users") if r["email"] == EMAIL)["mfa_secret"] is None


def test_enrolling_again_while_enabled_is_refused(client, clock):
    session = signup(client, EMAIL)
    enable(client, session, clock)
    error_of(client.post("/v1/auth/mfa/enroll", json={"password": PASSWORD}, headers=bearer(session)), 409,
             "MFA_ALREADY_ENABLED")


def test_enrolling_needs_the_password(client):
    # A stolen session alone must not turn MFA on with the thief's device.
    session = signup(client, EMAIL)
    error_of(client.post("/v1/auth/mfa/enroll", json={"password": "Not-The-Password-1"}, headers=bearer(session)),
             401, "INVALID_CREDENTIALS")
    error_of(client.post("/v1/auth/mfa/enroll", json={}, headers=bearer(session)), 422, "VALIDATION_ERROR")
