"""Creating and listing API keys: the secret is shown once, stored only as an HMAC, listed masked."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.identity import bearer, create_key, error_of, key_digest, rows, signup

pytestmark = pytest.mark.db

KEY_PATTERN = re.compile(r"^lnos_(live|test)_[0-9A-Za-z]{49}$")
KEY_FIELDS = {"id", "user_id", "name", "description", "environment", "masked_key", "scopes", "allowed_projects",
              "tags", "rate_limit", "status", "expires_at", "revoked_at", "created_at", "last_used_at", "usage"}


@pytest.fixture
def owner(client):
    return signup(client, "owner@example.com")


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def post_key(client, owner, **body):
    body.setdefault("name", "k")
    body.setdefault("scopes", ["keys:read"])
    return client.post("/v1/api-keys", json=body, headers=bearer(owner))


def test_create_shows_the_key_once(client, owner):
    response = post_key(client, owner, name="ci deploy", description="used by CI", scopes=["keys:read"])
    assert response.status_code == 201
    data = response.get_json()["data"]
    assert set(data) == KEY_FIELDS | {"key", "warning"}
    assert KEY_PATTERN.match(data["key"])
    assert data["key"].startswith("lnos_live_")
    assert data["id"].startswith("key_")
    assert "only once" in data["warning"]
    assert (data["name"], data["description"], data["scopes"], data["environment"], data["status"]) == \
        ("ci deploy", "used by CI", ["keys:read"], "live", "active")
    assert data["user_id"] == owner["user"]["id"]
    assert data["usage"] == {"requests": 0, "errors": 0}
    assert data["last_used_at"] is None and data["expires_at"] is None and data["revoked_at"] is None
    # The mask shows the start and the end of the real key, and nothing else.
    head, tail = data["masked_key"].split("...")
    assert data["key"].startswith(head) and data["key"].endswith(tail)
    assert len(head) == len("lnos_live_") + 4 and len(tail) == 4
    # The key works at once.
    listed = client.get("/v1/api-keys", headers=bearer(data["key"]))
    assert listed.status_code == 200


def test_every_key_is_different(client, owner):
    keys = {create_key(client, owner)["key"] for _ in range(5)}
    assert len(keys) == 5
    assert all(KEY_PATTERN.match(k) for k in keys)


def test_the_secret_never_appears_again(client, owner, app):
    created = create_key(client, owner, scopes=["keys:read", "keys:write"], tags=["ci"])
    secret, digest = created["key"], key_digest(app, created["key"])
    responses = [
        client.get("/v1/api-keys", headers=bearer(owner)),
        client.get(f"/v1/api-keys/{created['id']}", headers=bearer(owner)),
        client.get("/v1/api-keys?tag=ci", headers=bearer(secret)),
        client.get(f"/v1/api-keys/{created['id']}", headers=bearer(secret)),
    ]
    for response in responses:
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert secret not in text and digest not in text
        assert secret[10:30] not in text  # not even a long piece of the random part
        assert "key" not in (response.get_json()["data"] if isinstance(response.get_json()["data"], dict)
                             else response.get_json()["data"][0])
    rotated = client.post(f"/v1/api-keys/{created['id']}/rotate", json={}, headers=bearer(owner))
    new_secret = rotated.get_json()["data"]["key"]
    listed = client.get("/v1/api-keys", headers=bearer(owner)).get_data(as_text=True)
    assert new_secret not in listed and key_digest(app, new_secret) not in listed


def test_keys_are_stored_only_as_hmac(client, owner, app):
    created = create_key(client, owner)
    secret = created["key"]
    stored = rows(app, "api_key_secrets")
    assert [r["digest"] for r in stored] == [key_digest(app, secret)]
    everything = " ".join(str(r) for table in ("api_keys", "api_key_secrets", "users") for r in rows(app, table))
    assert secret not in everything
    assert secret[10:] not in everything  # the random part alone is not stored either
    import hashlib

    assert hashlib.sha256(secret.encode()).hexdigest() not in everything  # not an unkeyed hash


def test_the_pepper_is_part_of_the_hash(client, owner, make_app):
    secret = create_key(client, owner)["key"]
    other = make_app(KEYS_PEPPER="a-different-pepper-" + "p" * 40)
    error_of(other.test_client().get("/v1/api-keys", headers=bearer(secret)), 401, "KEY_INVALID")


def test_list_is_paginated_newest_first(client, owner):
    ids = [create_key(client, owner, name=f"key {n}")["id"] for n in range(5)]
    body = client.get("/v1/api-keys?per_page=2", headers=bearer(owner)).get_json()
    assert body["pagination"]["total"] == 5 and body["pagination"]["pages"] == 3
    assert [k["id"] for k in body["data"]] == ids[::-1][:2]
    assert set(body["data"][0]) == KEY_FIELDS
    page3 = client.get("/v1/api-keys?per_page=2&page=3", headers=bearer(owner)).get_json()
    assert [k["id"] for k in page3["data"]] == [ids[0]]
    assert page3["pagination"]["has_next"] is False


def test_list_filters_by_status_environment_and_tag(client, owner):
    live = create_key(client, owner, name="live", tags=["ci", "deploy"])
    test = create_key(client, owner, name="test", environment="test", tags=["ci"])
    revoked = create_key(client, owner, name="gone", tags=["old"])
    assert client.delete(f"/v1/api-keys/{revoked['id']}", headers=bearer(owner)).status_code == 204

    def names(query):
        response = client.get(f"/v1/api-keys?{query}", headers=bearer(owner))
        assert response.status_code == 200, response.get_data(as_text=True)
        return sorted(k["name"] for k in response.get_json()["data"])

    assert names("status=active") == ["live", "test"]
    assert names("status=revoked") == ["gone"]
    assert names("status=expired") == []
    assert names("environment=test") == ["test"]
    assert names("environment=live") == ["gone", "live"]
    assert names("tag=ci") == ["live", "test"]
    assert names("tag=deploy") == ["live"]
    assert names("tag=c") == []  # whole tags only
    assert names("tag=ci&environment=live&status=active") == ["live"]
    assert live["tags"] == ["ci", "deploy"] and test["tags"] == ["ci"]
    error_of(client.get("/v1/api-keys?status=sleeping", headers=bearer(owner)), 422, "VALIDATION_ERROR")
    error_of(client.get("/v1/api-keys?environment=prod", headers=bearer(owner)), 422, "VALIDATION_ERROR")


def test_get_one_key(client, owner):
    created = create_key(client, owner, name="single")
    body = client.get(f"/v1/api-keys/{created['id']}", headers=bearer(owner)).get_json()
    assert set(body["data"]) == KEY_FIELDS
    assert body["data"]["name"] == "single" and body["data"]["masked_key"] == created["masked_key"]
    error_of(client.get("/v1/api-keys/key_doesnotexist", headers=bearer(owner)), 404, "NOT_FOUND")


@pytest.mark.parametrize("expires_in, delta", [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)),
                                               ("30m", timedelta(minutes=30)), ("2w", timedelta(weeks=2))])
def test_expires_in(client, owner, expires_in, delta):
    before = datetime.now(UTC)
    data = create_key(client, owner, expires_in=expires_in)
    after = datetime.now(UTC)
    expires = parse_time(data["expires_at"])
    assert before + delta - timedelta(seconds=1) <= expires <= after + delta + timedelta(seconds=1)
    assert data["status"] == "active"


def test_expires_at(client, owner):
    when = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    data = create_key(client, owner, expires_at=when.isoformat())
    assert parse_time(data["expires_at"]) == when


@pytest.mark.parametrize("body, field", [
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "2999-01-01T00:00:00"}, "expires_at"),  # no time zone
    ({"expires_in": "90d", "expires_at": "2999-01-01T00:00:00Z"}, "expires_in"),
    ({"expires_in": "soon"}, "expires_in"),
    ({"expires_in": "0d"}, "expires_in"),
    ({"expires_in": "-5d"}, "expires_in"),
    ({"expires_in": "99999w"}, "expires_in"),
    ({"rate_limit": "lots"}, "rate_limit"),
    ({"rate_limit": "10 per fortnight"}, "rate_limit"),
    ({"scopes": []}, "scopes"),
    ({"scopes": ["keys:read", "nope:nothing"]}, "scopes"),
    ({"environment": "prod"}, "environment"),
    ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"tags": ["x" * 41]}, "tags.0"),
])
def test_invalid_settings_are_422_naming_the_field(client, owner, body, field):
    error = error_of(post_key(client, owner, **body), 422, "VALIDATION_ERROR")
    assert field in error["details"]["fields"], error
    assert client.get("/v1/api-keys", headers=bearer(owner)).get_json()["pagination"]["total"] == 0


def test_unknown_scope_message_points_to_the_catalog(client, owner):
    error = error_of(post_key(client, owner, scopes=["keys:read", "nope:nothing"]), 422, "VALIDATION_ERROR")
    assert "nope:nothing" in error["details"]["fields"]["scopes"][0]
    assert "/v1/api-keys/scopes" in error["details"]["fields"]["scopes"][0]


def test_settings_are_kept(client, owner):
    data = create_key(client, owner, name="full", description="all settings", scopes=["keys:write", "keys:read"],
                      rate_limit="1000/15 minutes", allowed_projects=["p2", "p1", "p1"], tags=["b", "a"],
                      environment="test", expires_in="90d")
    assert data["key"].startswith("lnos_test_")
    got = client.get(f"/v1/api-keys/{data['id']}", headers=bearer(owner)).get_json()["data"]
    assert got["scopes"] == ["keys:read", "keys:write"]
    assert got["rate_limit"] == "1000/15 minutes"
    assert got["allowed_projects"] == ["p1", "p2"]
    assert got["tags"] == ["a", "b"]
    assert got["environment"] == "test"
    assert got["description"] == "all settings"
    assert got["expires_at"] == data["expires_at"]


def test_allowed_projects_default_to_every_project(client, owner):
    assert create_key(client, owner)["allowed_projects"] is None
    assert create_key(client, owner, allowed_projects=[])["allowed_projects"] == []


def test_creating_a_key_needs_keys_write(client, owner):
    reader = create_key(client, owner, scopes=["keys:read"])["key"]
    error = error_of(post_key(client, reader), 403, "INSUFFICIENT_SCOPE")
    assert error["details"]["required_scope"] == "keys:write"
    error_of(client.post("/v1/api-keys", json={"name": "x", "scopes": ["keys:read"]}), 401)


def test_keys_per_user_are_capped(make_app):
    client = make_app(KEYS_MAX_PER_USER=2).test_client()
    owner = signup(client, "collector@example.com")
    first = create_key(client, owner)
    create_key(client, owner)
    error_of(post_key(client, owner), 409, "KEY_LIMIT_REACHED")
    client.delete(f"/v1/api-keys/{first['id']}", headers=bearer(owner))
    assert post_key(client, owner).status_code == 201


def test_the_server_can_require_an_expiry(make_app):
    client = make_app(KEYS_MAX_LIFETIME_DAYS=30).test_client()
    owner = signup(client, "careful@example.com")
    error_of(post_key(client, owner), 422, "VALIDATION_ERROR")
    error_of(post_key(client, owner, expires_in="90d"), 422, "VALIDATION_ERROR")
    too_late = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    error_of(post_key(client, owner, expires_at=too_late), 422, "VALIDATION_ERROR")
    assert post_key(client, owner, expires_in="7d").status_code == 201
    in_time = (datetime.now(UTC) + timedelta(days=29)).isoformat()
    assert post_key(client, owner, expires_at=in_time).status_code == 201


def test_scope_catalog_says_what_the_caller_may_grant(client, app):
    from tests.support.identity import make_admin

    user = signup(client, "catalog@example.com")
    body = client.get("/v1/api-keys/scopes", headers=bearer(user)).get_json()
    catalog = {s["scope"]: s for s in body["data"]}
    assert {"keys:read", "keys:write", "admin:keys", "admin:users", "admin:audit"} <= set(catalog)
    assert set(catalog["keys:read"]) == {"scope", "description", "plugin", "grantable"}
    assert catalog["keys:read"]["plugin"] == "keys" and catalog["admin:users"]["plugin"] == "auth"
    assert catalog["keys:read"]["description"]
    assert catalog["keys:read"]["grantable"] is True and catalog["keys:write"]["grantable"] is True
    assert catalog["admin:keys"]["grantable"] is False and catalog["admin:users"]["grantable"] is False
    admin = make_admin(app, client)
    admin_catalog = client.get("/v1/api-keys/scopes", headers=bearer(admin)).get_json()["data"]
    assert all(s["grantable"] for s in admin_catalog)
    # A key sees what *it* may grant.
    key = create_key(client, user, scopes=["keys:read"])["key"]
    key_catalog = {s["scope"]: s["grantable"] for s in
                   client.get("/v1/api-keys/scopes", headers=bearer(key)).get_json()["data"]}
    assert key_catalog["keys:read"] is True and key_catalog["keys:write"] is False
    error_of(client.get("/v1/api-keys/scopes"), 401)


@pytest.mark.db
def test_a_key_created_by_a_key_never_outlives_its_creator(client):
    session = signup(client, "parent@example.com")
    parent = create_key(client, session, scopes=["keys:read", "keys:write"], expires_in="1d")
    child = client.post("/v1/api-keys", headers=bearer(parent["key"]),
                        json={"name": "child", "scopes": ["keys:read"], "expires_in": "90d"}).get_json()["data"]
    assert child["expires_at"] == parent["expires_at"]
    forever = client.post("/v1/api-keys", headers=bearer(parent["key"]),
                          json={"name": "forever", "scopes": ["keys:read"]}).get_json()["data"]
    assert forever["expires_at"] == parent["expires_at"]
