"""Accounts and sessions: sign-up, login, /me, refresh, logout, password change, password hashing."""
from __future__ import annotations

import re

import pytest

from tests.support.identity import (OTHER_PASSWORD, PASSWORD, bearer, error_of, login, login_ok, rows, signup,
                                    without_request_id)

pytestmark = pytest.mark.db

USER_FIELDS = {"id", "email", "name", "role", "tier", "mfa_enabled", "created_at"}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def password_hash(app, email):
    return next(r["password_hash"] for r in rows(app, "users") if r["email"] == email)


# --- sign-up -----------------------------------------------------------------------------

def test_signup_returns_a_user_and_a_working_session(client):
    response = client.post("/v1/auth/signup", json={"email": "ada@example.com", "password": PASSWORD,
                                                     "name": "Ada"})
    assert response.status_code == 201
    data = response.get_json()["data"]
    assert set(data) == {"user", "access_token", "refresh_token", "token_type", "expires_in"}
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 15 * 60
    user = data["user"]
    assert set(user) == USER_FIELDS
    assert user["id"].startswith("usr_")
    assert (user["email"], user["name"], user["role"], user["tier"], user["mfa_enabled"]) == \
        ("ada@example.com", "Ada", "user", "free", False)
    assert ISO_Z.match(user["created_at"])
    assert "password" not in response.get_data(as_text=True).lower()
    me = client.get("/v1/auth/me", headers=bearer(data))
    assert me.status_code == 200
    assert me.get_json()["data"]["id"] == user["id"]


def test_signup_normalises_the_email(client):
    data = signup(client, "  Grace.Hopper@Example.COM  ")
    assert data["user"]["email"] == "grace.hopper@example.com"
    login_ok(client, "GRACE.HOPPER@example.com ")


@pytest.mark.parametrize("email", ["not-an-email", "two@@example.com", "nobody@", "@example.com",
                                   "spaces in@example.com"])
def test_signup_refuses_an_invalid_email(client, email):
    response = client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    error = error_of(response, 422, "VALIDATION_ERROR")
    assert error["details"]["fields"]["email"]
    assert all(isinstance(m, str) and m for m in error["details"]["fields"]["email"])


def test_signup_refuses_missing_fields_with_field_messages(client):
    error = error_of(client.post("/v1/auth/signup", json={}), 422, "VALIDATION_ERROR")
    assert {"email", "password"} <= set(error["details"]["fields"])


def test_duplicate_email_is_409_whatever_the_case(client):
    signup(client, "linus@example.com")
    for spelling in ("linus@example.com", "LINUS@Example.com", " Linus@example.COM"):
        response = client.post("/v1/auth/signup", json={"email": spelling, "password": OTHER_PASSWORD})
        error_of(response, 409, "EMAIL_TAKEN")
    # The original account is untouched: its password still works, the other one does not.
    login_ok(client, "linus@example.com")
    error_of(login(client, "linus@example.com", OTHER_PASSWORD), 401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize("password, expected", [
    ("Ab1!xyz", "at least 10 characters"),
    ("alllowercaseletters", None),  # 19 characters: long enough to pass without classes
    ("lowercaseonly", "three of"),
    ("p@ssw0rd123", "too common"),
    ("Marianne-Pass-1", "email"),
    ("aaaaaaaaaaaaaaaaaaaa", "different characters"),
])
def test_password_policy_explains_what_is_wrong(client, password, expected):
    response = client.post("/v1/auth/signup", json={"email": "marianne@example.com", "password": password})
    if expected is None:
        assert response.status_code == 201, response.get_data(as_text=True)
        return
    error = error_of(response, 422, "VALIDATION_ERROR")
    messages = error["details"]["fields"]["password"]
    assert any(expected in m for m in messages), messages
    assert "policy" in error["message"]
    assert password not in response.get_data(as_text=True)


def test_password_policy_reports_every_broken_rule(client):
    response = client.post("/v1/auth/signup", json={"email": "short@example.com", "password": "abc"})
    messages = error_of(response, 422)["details"]["fields"]["password"]
    assert len(messages) >= 2  # too short and too few character classes, at once


# --- login, /me --------------------------------------------------------------------------

def test_login_returns_a_new_working_session(client):
    first = signup(client, "ken@example.com")
    data = login_ok(client, "ken@example.com")
    assert set(data) == {"user", "access_token", "refresh_token", "token_type", "expires_in"}
    assert data["user"]["id"] == first["user"]["id"]
    assert data["access_token"] != first["access_token"]
    assert client.get("/v1/auth/me", headers=bearer(data)).status_code == 200


def test_wrong_password_and_unknown_email_look_the_same(client):
    signup(client, "dennis@example.com")
    wrong_password = login(client, "dennis@example.com", OTHER_PASSWORD)
    unknown_email = login(client, "nobody-here@example.com", OTHER_PASSWORD)
    malformed_email = login(client, "not an email", OTHER_PASSWORD)
    for response in (wrong_password, unknown_email, malformed_email):
        error_of(response, 401, "INVALID_CREDENTIALS")
    assert without_request_id(wrong_password) == without_request_id(unknown_email)
    assert without_request_id(wrong_password) == without_request_id(malformed_email)
    assert wrong_password.headers.get("WWW-Authenticate") == unknown_email.headers.get("WWW-Authenticate")


def test_me_describes_the_caller(client):
    data = signup(client, "barbara@example.com", name="Barbara")
    body = client.get("/v1/auth/me", headers=bearer(data)).get_json()
    assert set(body) == {"data"}
    assert set(body["data"]) == USER_FIELDS
    assert body["data"] == data["user"]


def test_me_needs_a_credential(client):
    error_of(client.get("/v1/auth/me"), 401, "UNAUTHORIZED")


# --- refresh and logout ------------------------------------------------------------------

def test_refresh_gives_a_new_working_access_token(client):
    data = signup(client, "edsger@example.com")
    for how in ("body", "header"):
        if how == "body":
            response = client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
        else:
            response = client.post("/v1/auth/refresh", json={}, headers=bearer(data["refresh_token"]))
        assert response.status_code == 200, response.get_data(as_text=True)
        fresh = response.get_json()["data"]
        assert set(fresh) == {"access_token", "token_type", "expires_in"}
        assert fresh["token_type"] == "Bearer"
        me = client.get("/v1/auth/me", headers=bearer(fresh["access_token"]))
        assert me.status_code == 200
        assert me.get_json()["data"]["email"] == "edsger@example.com"


def test_logout_revokes_the_access_and_refresh_token_of_that_session_only(client):
    session = signup(client, "alan@example.com")
    other = login_ok(client, "alan@example.com")
    response = client.post("/v1/auth/logout", headers=bearer(session))
    assert response.status_code == 204
    error_of(client.get("/v1/auth/me", headers=bearer(session)), 401, "TOKEN_REVOKED")
    error_of(client.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}), 401,
             "TOKEN_REVOKED")
    # A second logout with the same token is refused too.
    error_of(client.post("/v1/auth/logout", headers=bearer(session)), 401, "TOKEN_REVOKED")
    # The user's other session is unaffected.
    assert client.get("/v1/auth/me", headers=bearer(other)).status_code == 200
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert refreshed.status_code == 200


def test_logout_also_kills_access_tokens_refreshed_from_that_session(client):
    session = signup(client, "margaret@example.com")
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})
    access = refreshed.get_json()["data"]["access_token"]
    assert client.post("/v1/auth/logout", headers=bearer(session)).status_code == 204
    error_of(client.get("/v1/auth/me", headers=bearer(access)), 401, "TOKEN_REVOKED")


def test_logout_with_redis_is_seen_by_another_app(redis_app, make_app, redis_url):
    other_app = make_app(REDIS_URL=redis_url)
    one, two = redis_app.test_client(), other_app.test_client()
    session = signup(one, "hedy@example.com")
    assert two.get("/v1/auth/me", headers=bearer(session)).status_code == 200  # cached on app two
    assert one.post("/v1/auth/logout", headers=bearer(session)).status_code == 204
    error_of(two.get("/v1/auth/me", headers=bearer(session)), 401, "TOKEN_REVOKED")
    error_of(two.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}), 401, "TOKEN_REVOKED")


# --- password change ---------------------------------------------------------------------

def change(client, session, current, new):
    return client.post("/v1/auth/password", json={"current_password": current, "new_password": new},
                       headers=bearer(session))


def test_password_change_needs_the_current_password(client):
    session = signup(client, "frances@example.com")
    error_of(change(client, session, OTHER_PASSWORD, "Another-Good-Pass-7"), 401, "INVALID_CREDENTIALS")
    login_ok(client, "frances@example.com")  # unchanged


def test_password_change_applies_the_policy(client):
    session = signup(client, "radia@example.com")
    error = error_of(change(client, session, PASSWORD, "short"), 422, "VALIDATION_ERROR")
    assert any("at least 10" in m for m in error["details"]["fields"]["new_password"])
    error = error_of(change(client, session, PASSWORD, PASSWORD), 422, "VALIDATION_ERROR")
    assert "new_password" in error["details"]["fields"]
    login_ok(client, "radia@example.com")


def test_password_change_revokes_every_other_session(client):
    old = signup(client, "katherine@example.com")
    other = login_ok(client, "katherine@example.com")
    response = change(client, old, PASSWORD, OTHER_PASSWORD)
    assert response.status_code == 200, response.get_data(as_text=True)
    new = response.get_json()["data"]
    assert set(new) == {"user", "access_token", "refresh_token", "token_type", "expires_in"}
    # The new session works; every token from before the change is refused.
    assert client.get("/v1/auth/me", headers=bearer(new)).status_code == 200
    assert client.post("/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 200
    for session in (old, other):
        error_of(client.get("/v1/auth/me", headers=bearer(session)), 401, "TOKEN_REVOKED")
        error_of(client.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}), 401,
                 "TOKEN_REVOKED")
    error_of(login(client, "katherine@example.com", PASSWORD), 401, "INVALID_CREDENTIALS")
    login_ok(client, "katherine@example.com", OTHER_PASSWORD)


def test_password_change_with_redis_revokes_sessions_on_another_app(redis_app, make_app, redis_url):
    other_app = make_app(REDIS_URL=redis_url)
    one, two = redis_app.test_client(), other_app.test_client()
    old = signup(one, "annie@example.com")
    assert two.get("/v1/auth/me", headers=bearer(old)).status_code == 200
    new = change(one, old, PASSWORD, OTHER_PASSWORD).get_json()["data"]
    error_of(two.get("/v1/auth/me", headers=bearer(old)), 401, "TOKEN_REVOKED")
    assert two.get("/v1/auth/me", headers=bearer(new)).status_code == 200


# --- password storage --------------------------------------------------------------------

def test_passwords_are_stored_as_argon2id_hashes(client, app):
    signup(client, "joan@example.com")
    stored = password_hash(app, "joan@example.com")
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    everything = " ".join(str(r) for r in rows(app, "users"))
    assert PASSWORD not in everything


def test_login_rehashes_after_the_argon2_parameters_change(client, make_app):
    signup(client, "sophie@example.com")
    app = client.application
    before = password_hash(app, "sophie@example.com")
    assert "m=1024,t=1,p=1" in before
    stronger = make_app(AUTH_ARGON2_TIME_COST=2, AUTH_ARGON2_MEMORY_KIB=2048, AUTH_ARGON2_PARALLELISM=2)
    login_ok(stronger.test_client(), "sophie@example.com")
    after = password_hash(app, "sophie@example.com")
    assert after.startswith("$argon2id$")
    assert "m=2048,t=2,p=2" in after
    # The new hash still verifies the same password (on both configurations), and a second login
    # with unchanged parameters does not rehash again.
    login_ok(stronger.test_client(), "sophie@example.com")
    assert password_hash(app, "sophie@example.com") == after
    login_ok(client, "sophie@example.com")


# --- the account itself needs a session -----------------------------------------------------

def test_api_keys_cannot_change_the_password_or_mfa(client):
    from tests.support.identity import create_key

    session = signup(client, "keyholder@example.com")
    key = create_key(client, session, scopes=["keys:read", "keys:write"])["key"]
    calls = [
        ("/v1/auth/password", {"current_password": PASSWORD, "new_password": OTHER_PASSWORD}),
        ("/v1/auth/mfa/enroll", {"password": PASSWORD}),
        ("/v1/auth/mfa/verify", {"code": "123456"}),
        ("/v1/auth/mfa/disable", {"password": PASSWORD, "code": "123456"}),
    ]
    for path, body in calls:
        error = error_of(client.post(path, json=body, headers=bearer(key)), 403, "SESSION_REQUIRED")
        assert "session" in error["message"]
    error_of(client.post("/v1/auth/logout", headers=bearer(key)), 400, "NOT_A_SESSION")
    # Nothing changed: the password still works, MFA is still off, the key still works.
    assert login_ok(client, "keyholder@example.com")["user"]["mfa_enabled"] is False
    assert client.get("/v1/auth/me", headers=bearer(key)).status_code == 200
