"""Forged, tampered, expired, revoked and misused tokens: each a 401 in the error envelope, no traceback."""
from __future__ import annotations

import base64
import json
import time
import warnings

import jwt as pyjwt
import pytest

from tests.support.identity import bearer, error_of, signup

pytestmark = pytest.mark.db

JWT_SECRET = "test-jwt-secret-" + "y" * 40  # the suite's JWT_SECRET_KEY (tests/conftest.py base_config)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict, dict, str]:
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(payload))),
            signature)


def assert_refused(response, code=None):
    error = error_of(response, 401, code)
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "pyjwt", "jwt.exceptions", "File \"", JWT_SECRET):
        assert leak not in text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return error


@pytest.fixture
def session(client):
    return signup(client, "mallory-target@example.com")


def test_the_real_token_works(client, session):
    # The baseline every attack below is measured against.
    assert client.get("/v1/auth/me", headers=bearer(session)).status_code == 200
    _, claims, _ = segments(session["access_token"])
    assert pyjwt.decode(session["access_token"], JWT_SECRET, algorithms=["HS256"])["sub"] == claims["sub"]


def test_alg_none_is_refused(client, session):
    _, claims, _ = segments(session["access_token"])
    for alg in ("none", "None", "NONE"):
        header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        forged = f"{header}.{b64(json.dumps(claims).encode())}."
        assert_refused(client.get("/v1/auth/me", headers=bearer(forged)))
        # ... also with a made-up signature segment.
        assert_refused(client.get("/v1/auth/me", headers=bearer(forged + "c2ln")))


def test_alg_none_built_by_pyjwt_is_refused(client, session):
    _, claims, _ = segments(session["access_token"])
    forged = pyjwt.encode(claims, None, algorithm="none")
    assert_refused(client.get("/v1/auth/me", headers=bearer(forged)), "TOKEN_INVALID")


def test_token_signed_with_another_secret_is_refused(client, session):
    _, claims, _ = segments(session["access_token"])
    forged = pyjwt.encode(claims, "some-other-secret-" + "q" * 40, algorithm="HS256")
    assert_refused(client.get("/v1/auth/me", headers=bearer(forged)), "TOKEN_INVALID")


def test_algorithm_swap_to_hs512_with_the_real_secret_is_refused(client, session):
    _, claims, _ = segments(session["access_token"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns that the key is short for HS512
        forged = pyjwt.encode(claims, JWT_SECRET, algorithm="HS512")
    assert_refused(client.get("/v1/auth/me", headers=bearer(forged)), "TOKEN_INVALID")


def test_payload_edited_without_resigning_is_refused(client, session, app):
    from tests.support.identity import create_user

    admin_id = create_user(app, "the-admin@example.com", role="admin")
    header, claims, signature = session["access_token"].split(".")[0], segments(session["access_token"])[1], \
        session["access_token"].split(".")[2]
    for edit in ({"sub": admin_id}, {"exp": claims["exp"] + 86400}, {"type": "access", "fresh": True}):
        tampered = {**claims, **edit}
        token = f"{header}.{b64(json.dumps(tampered).encode())}.{signature}"
        assert_refused(client.get("/v1/auth/me", headers=bearer(token)), "TOKEN_INVALID")
    # The admin list stays out of reach with a tampered subject.
    token = f"{header}.{b64(json.dumps({**claims, 'sub': admin_id}).encode())}.{signature}"
    assert_refused(client.get("/v1/admin/users", headers=bearer(token)))


def test_signature_edited_is_refused(client, session):
    header, payload, signature = session["access_token"].split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert_refused(client.get("/v1/auth/me", headers=bearer(f"{header}.{payload}.{flipped}")), "TOKEN_INVALID")
    assert_refused(client.get("/v1/auth/me", headers=bearer(f"{header}.{payload}.")), "TOKEN_INVALID")


def test_expired_token_is_refused(client, session):
    _, claims, _ = segments(session["access_token"])
    now = int(time.time())
    expired = pyjwt.encode({**claims, "iat": now - 3600, "nbf": now - 3600, "exp": now - 60}, JWT_SECRET,
                           algorithm="HS256")
    error = assert_refused(client.get("/v1/auth/me", headers=bearer(expired)), "TOKEN_EXPIRED")
    assert "expired" in error["message"]


def test_token_from_a_server_with_a_short_lifetime_expires(make_app):
    # A lifetime below zero issues tokens that are already expired: no clock needs to move.
    app = make_app(AUTH_ACCESS_TOKEN_MINUTES=-1)
    client = app.test_client()
    session = signup(client, "ephemeral@example.com")
    assert_refused(client.get("/v1/auth/me", headers=bearer(session)), "TOKEN_EXPIRED")
    # The refresh token still works and hands out a (likewise short-lived) access token.
    assert client.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}).status_code == 200


def test_revoked_token_is_refused(client, session):
    assert client.post("/v1/auth/logout", headers=bearer(session)).status_code == 204
    assert_refused(client.get("/v1/auth/me", headers=bearer(session)), "TOKEN_REVOKED")


def test_refresh_token_cannot_be_used_as_an_access_token(client, session):
    error = assert_refused(client.get("/v1/auth/me", headers=bearer(session["refresh_token"])), "TOKEN_INVALID")
    assert "refresh" in error["message"]


def test_access_token_cannot_be_used_to_refresh(client, session):
    assert_refused(client.post("/v1/auth/refresh", json={"refresh_token": session["access_token"]}),
                   "TOKEN_INVALID")
    assert_refused(client.post("/v1/auth/refresh", json={}, headers=bearer(session)), "TOKEN_INVALID")


def test_refresh_needs_a_token(client):
    assert_refused(client.post("/v1/auth/refresh", json={}))
    assert_refused(client.post("/v1/auth/refresh", json={"refresh_token": "garbage"}))


@pytest.mark.parametrize("value", [
    "Bearer garbage",
    "Bearer eyJhbGciOiJIUzI1NiJ9.not-base64!.x",
    "Bearer eyJ.eyJ.eyJ",
    "Bearer " + "A" * 5000,
    "Bearer",
    "Bearer ",
    "Token abc",
    "garbage",
])
def test_garbage_credentials_are_refused(client, value):
    assert_refused(client.get("/v1/auth/me", headers={"Authorization": value}))


def test_basic_scheme_is_refused(client, session):
    basic = base64.b64encode(b"mallory-target@example.com:Moon-Landing-1969").decode()
    error = assert_refused(client.get("/v1/auth/me", headers={"Authorization": f"Basic {basic}"}))
    assert "Bearer" in error["message"]
    # Even a valid token is refused under another scheme.
    assert_refused(client.get("/v1/auth/me", headers={"Authorization": f"Basic {session['access_token']}"}))


def test_token_of_a_deleted_user_is_refused(client, session, app):
    from tests.support.identity import execute

    execute(app, "DELETE FROM users WHERE id = :id", id=session["user"]["id"])
    assert_refused(client.get("/v1/auth/me", headers=bearer(session)), "TOKEN_INVALID")


def test_public_routes_still_work_with_a_bad_credential(client):
    # A bad token does not turn public routes into errors; it only fails where authentication is needed.
    assert client.get("/health", headers={"Authorization": "Bearer garbage"}).status_code in (200, 503)
