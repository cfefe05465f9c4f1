"""Logs never hold a password, a session token, an API key or a TOTP secret."""
from __future__ import annotations

import json
import logging

import pyotp
import pytest

from tests.support.identity import OTHER_PASSWORD, PASSWORD, bearer, login, signup
from tests.support.logs import HandlerBuffer

pytestmark = pytest.mark.db

WRONG_PASSWORD = "Wrong-Guess-Password-77"


@pytest.fixture
def logged_app(make_app):
    """An app at DEBUG whose log handler (the one production writes through) writes into a buffer."""
    app = make_app(LOG_LEVEL="DEBUG")
    handler = app.extensions["lunaos.log_handler"]
    buffer = HandlerBuffer(handler)
    previous = handler.setStream(buffer)
    yield app, buffer
    handler.setStream(previous)
    logging.getLogger().setLevel(logging.INFO)


def test_secrets_never_reach_the_logs(logged_app, capfd):
    app, buffer = logged_app
    client = app.test_client()
    secrets: list[str] = [PASSWORD, OTHER_PASSWORD, WRONG_PASSWORD]

    session = signup(client, "logged@example.com")
    secrets += [session["access_token"], session["refresh_token"]]
    assert login(client, "logged@example.com", WRONG_PASSWORD).status_code == 401
    assert login(client, "nobody@example.com", WRONG_PASSWORD).status_code == 401
    second = login(client, "logged@example.com").get_json()["data"]
    secrets += [second["access_token"], second["refresh_token"]]
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    secrets.append(refreshed.get_json()["data"]["access_token"])

    created = client.post("/v1/api-keys", json={"name": "logged", "scopes": ["keys:read", "keys:write"]},
                          headers=bearer(session)).get_json()["data"]
    key = created["key"]
    secrets.append(key)
    assert client.get("/v1/auth/me", headers=bearer(key)).status_code == 200
    # Credentials where they do not belong: in the query string, in a bad header, in a bad body.
    client.get(f"/v1/auth/me?api_key={key}&access_token={session['access_token']}", headers=bearer(key))
    client.get("/v1/auth/me", headers={"Authorization": f"Token {key}"})
    client.get("/v1/auth/me", headers=bearer(key[:-1]))  # mistyped: still mostly the real key
    secrets.append(key[:-1])
    client.post("/v1/auth/login", data=f'{{"email": "logged@example.com", "password": "{PASSWORD}"',
                content_type="application/json")  # malformed JSON holding the password
    rotated = client.post(f"/v1/api-keys/{created['id']}/rotate", json={}, headers=bearer(key)).get_json()["data"]
    secrets.append(rotated["key"])

    changed = client.post("/v1/auth/password", json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
                          headers=bearer(session)).get_json()["data"]
    secrets += [changed["access_token"], changed["refresh_token"]]
    client.post("/v1/auth/password", json={"current_password": WRONG_PASSWORD, "new_password": "short"},
                headers=bearer(changed))

    enrolment = client.post("/v1/auth/mfa/enroll", json={"password": OTHER_PASSWORD},
                            headers=bearer(changed)).get_json()["data"]
    totp_secret = enrolment["secret"]
    secrets.append(totp_secret)
    code = pyotp.TOTP(totp_secret).now()
    assert client.post("/v1/auth/mfa/verify", json={"code": code}, headers=bearer(changed)).status_code == 200
    client.post("/v1/auth/logout", headers=bearer(changed))
    client.get("/v1/auth/me", headers=bearer(changed))  # revoked

    output = buffer.getvalue()
    captured = capfd.readouterr()
    everything = output + captured.out + captured.err
    records = [json.loads(line) for line in output.splitlines() if line.strip()]  # JSON lines
    # The capture is not vacuous: every one of the 18 requests above has its access-log line.
    assert len([r for r in records if r.get("logger") == "lunaos.access"]) == 18
    assert any("[REDACTED]" in (r.get("query") or "") for r in records)
    for secret in secrets:
        assert secret not in everything, f"a secret ({secret[:6]}...) is in the logs"
        assert json.dumps(secret)[1:-1] not in everything
    # The parts that make tokens and keys dangerous are not there either.
    assert session["access_token"].split(".")[2] not in everything
    assert key[len("lnos_live_"):] not in everything
    assert totp_secret.lower() not in everything.lower()
