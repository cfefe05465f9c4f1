"""The security audit trail: one event per security action, with who/where/which request, and no secrets."""
from __future__ import annotations

import json
import types
from datetime import UTC, datetime

import pyotp
import pytest

from tests.support.identity import (OTHER_PASSWORD, PASSWORD, bearer, error_of, login, make_admin, rows, signup)

pytestmark = pytest.mark.db

UA = {"User-Agent": "audit-test-agent/1.0"}
IP = {"REMOTE_ADDR": "192.0.2.10"}


def data_of(event):
    # Read with plain SQL: SQLite hands back the JSON text, PostgreSQL the decoded value.
    return event["data"] if isinstance(event["data"], dict) else json.loads(event["data"])


def events_of(app, type_):
    return [r for r in rows(app, "audit_events") if r["type"] == type_]


def the_event(app, type_, response):
    """The single event of this type written by the request that gave `response`."""
    request_id = response.headers["X-Request-ID"]
    found = [e for e in events_of(app, type_) if e["request_id"] == request_id]
    assert len(found) == 1, (type_, request_id, [(e["type"], e["request_id"]) for e in rows(app, "audit_events")])
    event = found[0]
    assert event["ip"] == IP["REMOTE_ADDR"]
    assert event["user_agent"] == UA["User-Agent"]
    assert event["id"].startswith("aud_")
    return event


@pytest.fixture
def frozen_totp(monkeypatch):
    from plugins.auth import mfa

    moment = 1_900_000_020.0
    monkeypatch.setattr(mfa, "time", types.SimpleNamespace(time=lambda: moment))
    return moment


def test_security_actions_are_audited_without_secrets(client, app, frozen_totp):
    kw = {"headers": UA, "environ_base": IP}
    secrets = [PASSWORD, OTHER_PASSWORD]

    r = client.post("/v1/auth/signup", json={"email": "audited@example.com", "password": PASSWORD}, **kw)
    session = r.get_json()["data"]
    uid = session["user"]["id"]
    secrets += [session["access_token"], session["refresh_token"]]
    e = the_event(app, "auth.signup", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)

    r = login(client, "audited@example.com", OTHER_PASSWORD, **kw)
    assert r.status_code == 401
    e = the_event(app, "auth.login.failed", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)
    r = login(client, "nobody@example.com", OTHER_PASSWORD, **kw)
    e = the_event(app, "auth.login.failed", r)
    assert (e["actor_id"], e["target_id"]) == (None, None)

    r = login(client, "audited@example.com", PASSWORD, **kw)
    second = r.get_json()["data"]
    secrets += [second["access_token"], second["refresh_token"]]
    e = the_event(app, "auth.login.succeeded", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)

    r = client.post("/v1/auth/logout", headers={**bearer(second), **UA}, environ_base=IP)
    assert r.status_code == 204
    e = the_event(app, "auth.logout", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)

    r = client.post("/v1/auth/password", json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
                    headers={**bearer(session), **UA}, environ_base=IP)
    session = r.get_json()["data"]
    secrets += [session["access_token"], session["refresh_token"]]
    e = the_event(app, "auth.password.changed", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)

    r = client.post("/v1/auth/mfa/enroll", json={"password": OTHER_PASSWORD},
                    headers={**bearer(session), **UA}, environ_base=IP)
    totp_secret = r.get_json()["data"]["secret"]
    secrets.append(totp_secret)
    code = pyotp.TOTP(totp_secret).at(frozen_totp)
    r = client.post("/v1/auth/mfa/verify", json={"code": code}, headers={**bearer(session), **UA}, environ_base=IP)
    assert r.status_code == 200
    e = the_event(app, "auth.mfa.enabled", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)

    r = client.post("/v1/api-keys", json={"name": "audited", "scopes": ["keys:read", "keys:write"]},
                    headers={**bearer(session), **UA}, environ_base=IP)
    created = r.get_json()["data"]
    secrets.append(created["key"])
    e = the_event(app, "keys.created", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)
    assert data_of(e)["key_id"] == created["id"]

    r = client.post(f"/v1/api-keys/{created['id']}/rotate", json={}, headers={**bearer(created["key"]), **UA},
                    environ_base=IP)
    rotated = r.get_json()["data"]["key"]
    secrets.append(rotated)
    e = the_event(app, "keys.rotated", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)

    r = client.delete(f"/v1/api-keys/{created['id']}", headers={**bearer(rotated), **UA}, environ_base=IP)
    assert r.status_code == 204
    e = the_event(app, "keys.revoked", r)
    assert (e["actor_id"], e["target_id"]) == (uid, uid)

    admin = make_admin(app, client)
    secrets += [admin["access_token"], admin["refresh_token"]]
    r = client.patch(f"/v1/admin/users/{uid}", json={"tier": "pro", "disabled": True},
                     headers={**bearer(admin), **UA}, environ_base=IP)
    assert r.status_code == 200
    e = the_event(app, "admin.user.updated", r)
    assert (e["actor_id"], e["target_id"]) == (admin["user"]["id"], uid)
    data = data_of(e)
    assert data["after"] == {"tier": "pro", "disabled": True}
    assert data["before"] == {"tier": "free", "disabled": False}

    everything = json.dumps(rows(app, "audit_events"), default=str)
    for secret in secrets:
        assert secret not in everything
    assert "$argon2" not in everything


def test_events_are_readable_by_admins_through_the_api(client, app):
    user = signup(client, "someone@example.com")
    admin = make_admin(app, client)
    response = client.get("/v1/admin/audit", headers=bearer(admin))
    assert response.status_code == 200
    body = response.get_json()
    types_ = [e["type"] for e in body["data"]]
    assert types_[:2] == ["auth.login.succeeded", "auth.signup"]  # newest first (the admin's login last)
    signup_event = next(e for e in body["data"] if e["type"] == "auth.signup"
                        and e["target_id"] == user["user"]["id"])
    assert set(signup_event) == {"id", "type", "actor_id", "target_id", "ip", "user_agent", "request_id", "data",
                                 "created_at"}
    assert signup_event["actor_id"] == user["user"]["id"]
    assert signup_event["created_at"].endswith("Z")


def test_audit_is_admin_only(client):
    user = signup(client, "curious@example.com")
    error_of(client.get("/v1/admin/audit", headers=bearer(user)), 403, "INSUFFICIENT_SCOPE")
    error_of(client.get("/v1/admin/audit"), 401)


def test_audit_pagination_and_filters(client, app):
    admin = make_admin(app, client)
    alice = signup(client, "alice@example.com")
    login(client, "alice@example.com", OTHER_PASSWORD)
    middle = datetime.now(UTC)
    bob = signup(client, "bob@example.com")
    client.post("/v1/api-keys", json={"name": "k", "scopes": ["keys:read"]}, headers=bearer(bob))
    end = datetime.now(UTC)

    def query(params=""):
        response = client.get(f"/v1/admin/audit{params}", headers=bearer(admin))
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    everything = query("?per_page=100")["data"]
    # The admin's creation (by the service) and login; alice's signup and failed login; bob's signup and key.
    assert len(everything) == 6
    page = query("?per_page=2&page=2")
    assert page["pagination"]["total"] == len(everything)
    assert [e["id"] for e in page["data"]] == [e["id"] for e in everything[2:4]]

    alice_events = query(f"?actor_id={alice['user']['id']}")["data"]
    assert sorted(e["type"] for e in alice_events) == ["auth.login.failed", "auth.signup"]
    assert [e["type"] for e in query("?type=keys.created")["data"]] == ["keys.created"]
    assert {e["type"] for e in query("?type=auth.*&per_page=100")["data"]} == {"auth.signup", "auth.login.failed",
                                                                               "auth.login.succeeded"}
    assert query("?type=auth.sign")["data"] == []  # exact unless it ends with *
    assert query("?type=auth.%25")["data"] == []  # a LIKE wildcard is not one

    def iso(moment):
        return moment.isoformat().replace("+00:00", "Z")

    after = query(f"?since={iso(middle)}&per_page=100")["data"]
    assert sorted(e["type"] for e in after) == ["auth.signup", "keys.created"]
    assert all(e["actor_id"] == bob["user"]["id"] for e in after)
    before = query(f"?until={iso(middle)}&per_page=100")["data"]
    assert len(before) == len(everything) - 2
    assert query(f"?since={iso(end)}")["data"] == []
    assert query(f"?since={iso(middle)}&until={iso(end)}&actor_id={bob['user']['id']}&type=keys.*")["data"][0][
        "type"] == "keys.created"
    error_of(client.get("/v1/admin/audit?since=yesterday", headers=bearer(admin)), 422, "VALIDATION_ERROR")


def test_a_failing_audit_write_does_not_break_the_request(make_app, monkeypatch):
    from plugins.audit import service

    def broken(event):
        raise RuntimeError("audit storage is down")

    monkeypatch.setattr(service, "record", broken)  # before the app subscribes its listener
    app = make_app()
    response = app.test_client().post("/v1/auth/signup", json={"email": "resilient@example.com",
                                                               "password": PASSWORD})
    assert response.status_code == 201
    assert events_of(app, "auth.signup") == []
