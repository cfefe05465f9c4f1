"""Using a key: mistyped, unknown, expired, revoked and rotated keys; scopes; own rate limits; projects."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from flask.views import MethodView

from app import openapi
from app.http import Blueprint
from app.security import require, require_project
from tests.support.identity import (StatementCounter, bearer, create_key, error_of, make_admin, signup)

pytestmark = pytest.mark.db

ME = "/v1/auth/me"


@pytest.fixture
def owner(client):
    return signup(client, "owner@example.com")


def later(monkeypatch, delta):
    """Move the keys plugin's clock forward (verification and the listed status)."""
    from app.ids import utcnow
    from plugins.keys import models, service

    for module in (service, models):
        monkeypatch.setattr(module, "utcnow", lambda: utcnow() + delta)
    monkeypatch.setattr(service, "_epoch", lambda: time.time() + delta.total_seconds())


def test_a_key_authenticates_as_its_owner(client, owner):
    key = create_key(client, owner)["key"]
    response = client.get(ME, headers=bearer(key))
    assert response.status_code == 200
    assert response.get_json()["data"]["id"] == owner["user"]["id"]


# --- malformed and unknown keys ------------------------------------------------------------

def mistypings(key):
    body_at = len("lnos_live_") + 5
    changed = key[:body_at] + ("a" if key[body_at] != "a" else "b") + key[body_at + 1:]
    swapped = key[:body_at] + key[body_at + 1] + key[body_at] + key[body_at + 2:]
    yield "one character changed", changed
    if swapped != key:
        yield "two characters swapped", swapped
    yield "last character changed", key[:-1] + ("Z" if key[-1] != "Z" else "Y")
    yield "truncated", key[:-1]
    yield "truncated a lot", key[:30]
    yield "one character more", key + "x"
    yield "other environment", key.replace("lnos_live_", "lnos_test_")


def test_a_mistyped_key_is_refused_without_a_database_query(client, owner, app):
    key = create_key(client, owner)["key"]
    assert client.get(ME, headers=bearer(key)).status_code == 200
    for label, wrong in mistypings(key):
        assert wrong != key
        with StatementCounter(app) as sql:
            response = client.get(ME, headers=bearer(wrong))
        error = error_of(response, 401, "KEY_INVALID")
        assert sql.count == 0, (label, sql.statements)
        assert "checksum" in error["message"] or "malformed" in error["message"]
        assert wrong not in response.get_data(as_text=True)
    # Not even shaped like a key: refused, still without a query.
    with StatementCounter(app) as sql:
        error_of(client.get(ME, headers=bearer(key.upper())), 401)
    assert sql.count == 0


def test_an_unknown_well_formed_key_is_refused(client, owner, app):
    from plugins.keys import keyformat

    create_key(client, owner)
    unknown = keyformat.generate("live")
    assert keyformat.is_well_formed(unknown)
    error_of(client.get(ME, headers=bearer(unknown)), 401, "KEY_INVALID")
    # Asked again, the answer is the same (and comes from the negative cache, not the database).
    with StatementCounter(app) as sql:
        error_of(client.get(ME, headers=bearer(unknown)), 401, "KEY_INVALID")
    assert sql.count == 0


def test_malformed_and_unknown_keys_give_the_same_code(client, owner):
    from plugins.keys import keyformat

    malformed = error_of(client.get(ME, headers=bearer("lnos_live_short")), 401)
    unknown = error_of(client.get(ME, headers=bearer(keyformat.generate("test"))), 401)
    assert malformed["code"] == unknown["code"] == "KEY_INVALID"


# --- expiry, revocation, rotation -------------------------------------------------------------

def test_an_expired_key_says_so(client, owner, monkeypatch):
    created = create_key(client, owner, expires_in="1h")
    key = created["key"]
    assert client.get(ME, headers=bearer(key)).status_code == 200
    later(monkeypatch, timedelta(minutes=59))
    assert client.get(ME, headers=bearer(key)).status_code == 200
    later(monkeypatch, timedelta(hours=1, seconds=1))
    error = error_of(client.get(ME, headers=bearer(key)), 401, "KEY_EXPIRED")
    assert "expired" in error["message"]
    listed = client.get(f"/v1/api-keys/{created['id']}", headers=bearer(owner)).get_json()["data"]
    assert listed["status"] == "expired"
    statuses = client.get("/v1/api-keys?status=expired", headers=bearer(owner)).get_json()["data"]
    assert [k["id"] for k in statuses] == [created["id"]]


def test_a_key_expired_in_the_database_fails_on_the_next_request_with_redis(redis_app, monkeypatch):
    from plugins.auth import service as auth
    from tests.support.identity import execute

    client = redis_app.test_client()
    owner = signup(client, "owner@example.com")
    created = create_key(client, owner, expires_in="90d")
    assert client.get(ME, headers=bearer(created["key"])).status_code == 200  # cached now
    execute(redis_app, "UPDATE api_keys SET expires_at = :t WHERE id = :id", id=created["id"],
            t=(datetime.now(UTC) - timedelta(minutes=1)).replace(tzinfo=None))  # stored naive UTC
    with redis_app.app_context():
        auth.authorisation_changed(owner["user"]["id"])
    error_of(client.get(ME, headers=bearer(created["key"])), 401, "KEY_EXPIRED")


def test_a_revoked_key_fails_on_its_very_next_request(client, owner):
    created = create_key(client, owner, scopes=["keys:read", "keys:write"])
    key = created["key"]
    other = create_key(client, owner)["key"]
    for _ in range(3):
        assert client.get(ME, headers=bearer(key)).status_code == 200
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(owner)).status_code == 204
    error = error_of(client.get(ME, headers=bearer(key)), 401, "KEY_REVOKED")
    assert "revoked" in error["message"]
    assert client.get(ME, headers=bearer(other)).status_code == 200  # only that key
    got = client.get(f"/v1/api-keys/{created['id']}", headers=bearer(owner)).get_json()["data"]
    assert got["status"] == "revoked" and got["revoked_at"]
    # Revoking again is harmless.
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(owner)).status_code == 204


def test_a_key_can_revoke_itself(client, owner):
    created = create_key(client, owner, scopes=["keys:write"])
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(created["key"])).status_code == 204
    error_of(client.get(ME, headers=bearer(created["key"])), 401, "KEY_REVOKED")


def test_revocation_with_redis_reaches_another_app_on_the_next_request(make_app, redis_url, redis_client):
    one = make_app(REDIS_URL=redis_url).test_client()
    two = make_app(REDIS_URL=redis_url).test_client()
    owner = signup(one, "owner@example.com")
    created = create_key(one, owner)
    for _ in range(3):  # verified and cached on both apps
        assert one.get(ME, headers=bearer(created["key"])).status_code == 200
        assert two.get(ME, headers=bearer(created["key"])).status_code == 200
    assert one.delete(f"/v1/api-keys/{created['id']}", headers=bearer(owner)).status_code == 204
    error_of(two.get(ME, headers=bearer(created["key"])), 401, "KEY_REVOKED")
    error_of(one.get(ME, headers=bearer(created["key"])), 401, "KEY_REVOKED")


def test_rotation_replaces_the_secret_at_once(client, owner):
    created = create_key(client, owner, name="rotating", scopes=["keys:read", "keys:write"], tags=["ci"],
                         rate_limit="100/minute", allowed_projects=["p1"], environment="test", expires_in="30d")
    old = created["key"]
    assert client.get(ME, headers=bearer(old)).status_code == 200
    response = client.post(f"/v1/api-keys/{created['id']}/rotate", json={}, headers=bearer(owner))
    assert response.status_code == 200, response.get_data(as_text=True)
    rotated = response.get_json()["data"]
    new = rotated["key"]
    assert new != old and new.startswith("lnos_test_")
    assert rotated["id"] == created["id"]
    for field in ("name", "scopes", "tags", "rate_limit", "allowed_projects", "environment", "expires_at",
                  "description", "user_id"):
        assert rotated[field] == created[field], field
    assert rotated["masked_key"] != created["masked_key"]
    assert new.startswith(rotated["masked_key"].split("...")[0])
    assert client.get(ME, headers=bearer(new)).status_code == 200
    error_of(client.get(ME, headers=bearer(old)), 401, "KEY_REVOKED")


def test_rotation_with_a_grace_period(client, owner, monkeypatch):
    created = create_key(client, owner, scopes=["keys:read", "keys:write"])
    old = created["key"]
    response = client.post(f"/v1/api-keys/{created['id']}/rotate", json={"grace_period": "1h"},
                           headers=bearer(old))  # a key may rotate itself
    assert response.status_code == 200
    new = response.get_json()["data"]["key"]
    assert client.get(ME, headers=bearer(old)).status_code == 200
    assert client.get(ME, headers=bearer(new)).status_code == 200
    later(monkeypatch, timedelta(hours=1, seconds=1))
    error_of(client.get(ME, headers=bearer(old)), 401, "KEY_REVOKED")
    assert client.get(ME, headers=bearer(new)).status_code == 200


def test_rotation_rules(client, owner):
    created = create_key(client, owner)
    path = f"/v1/api-keys/{created['id']}/rotate"
    error_of(client.post(path, json={"grace_period": "8d"}, headers=bearer(owner)), 422, "VALIDATION_ERROR")
    error_of(client.post(path, json={"grace_period": "whenever"}, headers=bearer(owner)), 422, "VALIDATION_ERROR")
    client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(owner))
    error_of(client.post(path, json={}, headers=bearer(owner)), 409, "KEY_NOT_ACTIVE")


def test_rotation_with_redis_reaches_another_app(make_app, redis_url, redis_client):
    one = make_app(REDIS_URL=redis_url).test_client()
    two = make_app(REDIS_URL=redis_url).test_client()
    owner = signup(one, "owner@example.com")
    created = create_key(one, owner)
    assert two.get(ME, headers=bearer(created["key"])).status_code == 200
    new = one.post(f"/v1/api-keys/{created['id']}/rotate", json={}, headers=bearer(owner)).get_json()["data"]["key"]
    error_of(two.get(ME, headers=bearer(created["key"])), 401, "KEY_REVOKED")
    assert two.get(ME, headers=bearer(new)).status_code == 200


# --- scopes -----------------------------------------------------------------------------

def test_a_key_only_has_its_own_scopes(client, owner):
    reader = create_key(client, owner, scopes=["keys:read"])
    assert client.get("/v1/api-keys", headers=bearer(reader["key"])).status_code == 200
    error = error_of(client.delete(f"/v1/api-keys/{reader['id']}", headers=bearer(reader["key"])), 403,
                     "INSUFFICIENT_SCOPE")
    assert error["details"]["required_scope"] == "keys:write"


def test_a_user_cannot_grant_admin_scopes(client, owner):
    for scope in ("admin:users", "admin:keys", "admin:audit"):
        response = client.post("/v1/api-keys", json={"name": "escalate", "scopes": ["keys:read", scope]},
                               headers=bearer(owner))
        error = error_of(response, 403, "INSUFFICIENT_SCOPE")
        assert error["details"]["required_scope"] == scope
    for wildcard in ("*", "admin:*"):
        response = client.post("/v1/api-keys", json={"name": "escalate", "scopes": [wildcard]},
                               headers=bearer(owner))
        assert response.status_code in (403, 422), response.get_data(as_text=True)
    assert client.get("/v1/api-keys", headers=bearer(owner)).get_json()["pagination"]["total"] == 0


def test_a_key_cannot_create_a_key_with_a_scope_it_lacks(client, owner):
    writer = create_key(client, owner, scopes=["keys:write"])["key"]
    response = client.post("/v1/api-keys", json={"name": "wider", "scopes": ["keys:read"]}, headers=bearer(writer))
    error = error_of(response, 403, "INSUFFICIENT_SCOPE")
    assert error["details"]["required_scope"] == "keys:read"
    # Within its own scopes it may.
    assert client.post("/v1/api-keys", json={"name": "same", "scopes": ["keys:write"]},
                       headers=bearer(writer)).status_code == 201


def test_an_admins_key_may_carry_admin_scopes_and_loses_them_with_the_role(client, app):
    admin = make_admin(app, client)
    second = make_admin(app, client, "root2@example.com")
    key = create_key(client, admin, scopes=["admin:users"])["key"]
    assert client.get("/v1/admin/users", headers=bearer(key)).status_code == 200
    error_of(client.get("/v1/api-keys", headers=bearer(key)), 403, "INSUFFICIENT_SCOPE")  # only its scopes
    # Demoted owner: the key's admin scope no longer applies, on the next request.
    response = client.patch(f"/v1/admin/users/{admin['user']['id']}", json={"role": "user"}, headers=bearer(second))
    assert response.status_code == 200
    error_of(client.get("/v1/admin/users", headers=bearer(key)), 403, "INSUFFICIENT_SCOPE")


def test_unknown_scope_is_422(client, owner):
    response = client.post("/v1/api-keys", json={"name": "x", "scopes": ["keys:admin"]}, headers=bearer(owner))
    error_of(response, 422, "VALIDATION_ERROR")


# --- rate limits --------------------------------------------------------------------------

def test_a_keys_own_rate_limit_overrides_the_tier(client, owner):
    limited = create_key(client, owner, rate_limit="3/minute")["key"]
    plain = create_key(client, owner)["key"]
    assert client.get(ME, headers=bearer(plain)).headers["X-RateLimit-Limit"] == "60"
    responses = [client.get(ME, headers=bearer(limited)) for _ in range(4)]
    assert [r.headers.get("X-RateLimit-Limit") for r in responses[:3]] == ["3", "3", "3"]
    assert [r.headers.get("X-RateLimit-Remaining") for r in responses[:3]] == ["2", "1", "0"]
    error = error_of(responses[3], 429, "RATE_LIMIT_EXCEEDED")
    assert int(responses[3].headers["Retry-After"]) == error["details"]["retry_after"]
    # The owner's session and other keys have their own budgets.
    assert client.get(ME, headers=bearer(plain)).status_code == 200
    assert client.get(ME, headers=bearer(owner)).status_code == 200


def test_a_keys_higher_rate_limit_is_allowed_too(client, owner):
    generous = create_key(client, owner, rate_limit="1000/15 minutes")["key"]
    assert client.get(ME, headers=bearer(generous)).headers["X-RateLimit-Limit"] == "1000"


# --- projects -------------------------------------------------------------------------------

projects = Blueprint("project_test", __name__, url_prefix="/v1/project-test")


@projects.route("/<project_id>")
class ProjectThing(MethodView):
    @require("keys:read")
    def get(self, project_id):
        require_project(project_id)
        return {"data": {"project": project_id}}


@pytest.fixture
def project_client(make_app):
    app = make_app()
    openapi.register_blueprint(app, projects)
    return app.test_client()


def test_a_key_restricted_to_projects_is_refused_elsewhere(project_client):
    client = project_client
    owner = signup(client, "projects@example.com")
    restricted = create_key(client, owner, allowed_projects=["p1"])["key"]
    assert client.get("/v1/project-test/p1", headers=bearer(restricted)).get_json() == {"data": {"project": "p1"}}
    error = error_of(client.get("/v1/project-test/p2", headers=bearer(restricted)), 403, "PROJECT_NOT_ALLOWED")
    assert error["details"]["project_id"] == "p2"
    assert error["details"]["allowed_projects"] == ["p1"]
    # No restriction: every project; an empty list: none.
    free = create_key(client, owner)["key"]
    none = create_key(client, owner, allowed_projects=[])["key"]
    for project in ("p1", "p2"):
        assert client.get(f"/v1/project-test/{project}", headers=bearer(free)).status_code == 200
        assert client.get(f"/v1/project-test/{project}", headers=bearer(owner)).status_code == 200
        error_of(client.get(f"/v1/project-test/{project}", headers=bearer(none)), 403, "PROJECT_NOT_ALLOWED")


# --- keys acting on keys: never beyond the acting key -------------------------------------

def test_a_key_cannot_rotate_a_key_with_scopes_it_lacks(client, owner):
    writer = create_key(client, owner, name="writer", scopes=["keys:write"])
    wider = create_key(client, owner, name="wider", scopes=["keys:read", "keys:write"])
    narrower = create_key(client, owner, name="peer", scopes=["keys:write"])
    response = client.post(f"/v1/api-keys/{wider['id']}/rotate", json={}, headers=bearer(writer["key"]))
    error = error_of(response, 403, "INSUFFICIENT_SCOPE")
    assert error["details"]["required_scope"] == "keys:read"
    assert "lnos_" not in response.get_data(as_text=True)
    assert client.get(ME, headers=bearer(wider["key"])).status_code == 200  # not rotated
    response = client.post(f"/v1/api-keys/{narrower['id']}/rotate", json={}, headers=bearer(writer["key"]))
    assert response.status_code == 200
    # The owner's session may rotate any of its keys.
    assert client.post(f"/v1/api-keys/{wider['id']}/rotate", json={}, headers=bearer(owner)).status_code == 200


def test_a_project_restricted_key_only_makes_keys_as_restricted(client, owner):
    restricted = create_key(client, owner, scopes=["keys:read", "keys:write"], allowed_projects=["p1", "p2"])
    as_key = bearer(restricted["key"])
    inherited = client.post("/v1/api-keys", json={"name": "child", "scopes": ["keys:read"]}, headers=as_key)
    assert inherited.status_code == 201
    assert inherited.get_json()["data"]["allowed_projects"] == ["p1", "p2"]
    narrower = client.post("/v1/api-keys", json={"name": "child", "scopes": ["keys:read"], "allowed_projects": ["p2"]},
                           headers=as_key)
    assert narrower.get_json()["data"]["allowed_projects"] == ["p2"]
    wider = client.post("/v1/api-keys", json={"name": "child", "scopes": ["keys:read"],
                                              "allowed_projects": ["p1", "p3"]}, headers=as_key)
    error = error_of(wider, 403, "PROJECT_NOT_ALLOWED")
    assert error["details"]["project_id"] == "p3"
    # Nor may it rotate (and so obtain) a key that reaches more projects.
    unrestricted = create_key(client, owner, scopes=["keys:read"])
    error_of(client.post(f"/v1/api-keys/{unrestricted['id']}/rotate", json={}, headers=as_key), 403,
             "PROJECT_NOT_ALLOWED")
    # The owner's session has no project restriction: anything goes.
    assert create_key(client, owner, allowed_projects=["p9"])["allowed_projects"] == ["p9"]
