"""User administration: admin-only, list/search, role/tier/disabled changes taking effect at once."""
from __future__ import annotations

import pytest

from tests.support.identity import (PASSWORD, bearer, create_key, error_of, login, login_ok, make_admin, signup)

pytestmark = pytest.mark.db

ADMIN_FIELDS = {"id", "email", "name", "role", "tier", "mfa_enabled", "created_at", "disabled", "last_login_at",
                "updated_at"}


def patch_user(client, admin, user_id, **changes):
    return client.patch(f"/v1/admin/users/{user_id}", json=changes, headers=bearer(admin))


def test_a_normal_user_cannot_administer(client):
    user = signup(client, "plain@example.com")
    error = error_of(client.get("/v1/admin/users", headers=bearer(user)), 403, "INSUFFICIENT_SCOPE")
    assert error["details"]["required_scope"] == "admin:users"
    error_of(patch_user(client, user, user["user"]["id"], role="admin"), 403, "INSUFFICIENT_SCOPE")
    error_of(patch_user(client, user, user["user"]["id"], tier="team"), 403, "INSUFFICIENT_SCOPE")
    me = client.get("/v1/auth/me", headers=bearer(user)).get_json()["data"]
    assert (me["role"], me["tier"]) == ("user", "free")


def test_a_key_of_a_normal_user_cannot_administer_either(client):
    user = signup(client, "plain@example.com")
    key = create_key(client, user, scopes=["keys:read", "keys:write"])["key"]
    error_of(client.get("/v1/admin/users", headers=bearer(key)), 403, "INSUFFICIENT_SCOPE")


def test_anonymous_callers_get_401(client):
    error_of(client.get("/v1/admin/users"), 401)
    error_of(client.patch("/v1/admin/users/usr_x", json={"tier": "pro"}), 401)


def test_admin_lists_users_paginated_and_searchable(client, app):
    admin = make_admin(app, client)
    for name in ("alice", "bob", "carol", "dave"):
        signup(client, f"{name}@example.com", name=name.title())
    body = client.get("/v1/admin/users?per_page=2", headers=bearer(admin)).get_json()
    assert body["pagination"] == {"page": 1, "per_page": 2, "total": 5, "pages": 3, "has_next": True,
                                  "has_prev": False}
    assert len(body["data"]) == 2
    assert set(body["data"][0]) == ADMIN_FIELDS
    assert "password" not in str(body).lower()
    everyone = []
    for page in (1, 2, 3):
        everyone += client.get(f"/v1/admin/users?per_page=2&page={page}", headers=bearer(admin)).get_json()["data"]
    assert sorted(u["email"] for u in everyone) == sorted(
        ["root@example.com", "alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"])
    assert everyone[0]["email"] == "dave@example.com"  # newest first
    found = client.get("/v1/admin/users?search=CAROL", headers=bearer(admin)).get_json()
    assert [u["email"] for u in found["data"]] == ["carol@example.com"]
    found = client.get("/v1/admin/users?search=Bo", headers=bearer(admin)).get_json()
    assert [u["email"] for u in found["data"]] == ["bob@example.com"]
    admins = client.get("/v1/admin/users?role=admin", headers=bearer(admin)).get_json()
    assert [u["email"] for u in admins["data"]] == ["root@example.com"]
    error_of(client.get("/v1/admin/users?per_page=1000", headers=bearer(admin)), 422, "VALIDATION_ERROR")


def test_admin_changes_tier_role_and_name(client, app):
    admin = make_admin(app, client)
    user = signup(client, "promoted@example.com")
    response = patch_user(client, admin, user["user"]["id"], tier="pro", name="Promoted")
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()["data"]
    assert set(data) == ADMIN_FIELDS
    assert (data["tier"], data["name"], data["role"]) == ("pro", "Promoted", "user")
    me = client.get("/v1/auth/me", headers=bearer(user)).get_json()["data"]
    assert (me["tier"], me["name"]) == ("pro", "Promoted")
    # Promotion to admin takes effect on the user's existing token.
    error_of(client.get("/v1/admin/users", headers=bearer(user)), 403, "INSUFFICIENT_SCOPE")
    assert patch_user(client, admin, user["user"]["id"], role="admin").status_code == 200
    assert client.get("/v1/admin/users", headers=bearer(user)).status_code == 200
    # ... and so does demotion.
    assert patch_user(client, admin, user["user"]["id"], role="user").status_code == 200
    error_of(client.get("/v1/admin/users", headers=bearer(user)), 403, "INSUFFICIENT_SCOPE")


def test_admin_patch_validates_its_input(client, app):
    admin = make_admin(app, client)
    user = signup(client, "target@example.com")
    uid = user["user"]["id"]
    error_of(patch_user(client, admin, uid, tier="platinum"), 422, "VALIDATION_ERROR")
    error_of(patch_user(client, admin, uid, role="root"), 422, "VALIDATION_ERROR")
    error_of(patch_user(client, admin, uid), 422, "VALIDATION_ERROR")
    error_of(patch_user(client, admin, uid, email="x@example.com"), 422, "VALIDATION_ERROR")
    error_of(patch_user(client, admin, "usr_doesnotexist", tier="pro"), 404, "NOT_FOUND")


def test_disabling_a_user_kills_their_token_and_keys_on_the_next_request(client, app):
    admin = make_admin(app, client)
    user = signup(client, "suspended@example.com")
    key = create_key(client, user, scopes=["keys:read"])["key"]
    assert client.get("/v1/auth/me", headers=bearer(user)).status_code == 200
    assert client.get("/v1/api-keys", headers=bearer(key)).status_code == 200
    data = patch_user(client, admin, user["user"]["id"], disabled=True).get_json()["data"]
    assert data["disabled"] is True
    error_of(client.get("/v1/auth/me", headers=bearer(user)), 401, "ACCOUNT_DISABLED")
    error_of(client.get("/v1/api-keys", headers=bearer(key)), 401, "ACCOUNT_DISABLED")
    error_of(client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]}), 401, "ACCOUNT_DISABLED")
    # Logging in again gives the same answer as a wrong password (no account enumeration).
    error_of(login(client, "suspended@example.com"), 401, "INVALID_CREDENTIALS")
    # Re-enabling restores access.
    assert patch_user(client, admin, user["user"]["id"], disabled=False).status_code == 200
    assert client.get("/v1/api-keys", headers=bearer(key)).status_code == 200
    login_ok(client, "suspended@example.com")


def test_disabling_with_redis_is_seen_by_another_app_at_once(make_app, redis_url, redis_client):
    app_one, app_two = make_app(REDIS_URL=redis_url), make_app(REDIS_URL=redis_url)
    one, two = app_one.test_client(), app_two.test_client()
    admin = make_admin(app_one, one)
    user = signup(one, "suspended@example.com")
    key = create_key(one, user, scopes=["keys:read"])["key"]
    # Both credentials are verified (and cached) on app two first.
    for _ in range(2):
        assert two.get("/v1/auth/me", headers=bearer(user)).status_code == 200
        assert two.get("/v1/api-keys", headers=bearer(key)).status_code == 200
    assert patch_user(one, admin, user["user"]["id"], disabled=True).status_code == 200
    error_of(two.get("/v1/auth/me", headers=bearer(user)), 401, "ACCOUNT_DISABLED")
    error_of(two.get("/v1/api-keys", headers=bearer(key)), 401, "ACCOUNT_DISABLED")
    # A tier change travels the same way.
    other = signup(one, "upgraded@example.com")
    assert two.get("/v1/auth/me", headers=bearer(other)).headers["X-RateLimit-Limit"] == "60"
    assert patch_user(one, admin, other["user"]["id"], tier="pro").status_code == 200
    assert two.get("/v1/auth/me", headers=bearer(other)).headers["X-RateLimit-Limit"] == "600"


def test_the_last_admin_cannot_demote_or_disable_themselves(client, app):
    admin = make_admin(app, client)
    admin_id = admin["user"]["id"]
    error_of(patch_user(client, admin, admin_id, role="user"), 409, "LAST_ADMIN")
    error_of(patch_user(client, admin, admin_id, disabled=True), 409, "LAST_ADMIN")
    assert client.get("/v1/admin/users", headers=bearer(admin)).status_code == 200
    # With a second admin, demotion is allowed.
    second = signup(client, "second-admin@example.com")
    assert patch_user(client, admin, second["user"]["id"], role="admin").status_code == 200
    assert patch_user(client, admin, admin_id, role="user").status_code == 200
    error_of(client.get("/v1/admin/users", headers=bearer(admin)), 403, "INSUFFICIENT_SCOPE")
    # The remaining admin is now the last one.
    error_of(patch_user(client, second, second["user"]["id"], disabled=True), 409, "LAST_ADMIN")


def test_a_disabled_admin_does_not_count_as_an_admin(client, app):
    admin = make_admin(app, client)
    from tests.support.identity import create_user

    other_id = create_user(app, "dormant-admin@example.com", role="admin")
    assert patch_user(client, admin, other_id, disabled=True).status_code == 200
    error_of(patch_user(client, admin, admin["user"]["id"], role="user"), 409, "LAST_ADMIN")


def test_tier_change_changes_the_rate_limit(client, app):
    admin = make_admin(app, client)
    user = signup(client, "customer@example.com")
    response = client.get("/v1/auth/me", headers=bearer(user))
    assert response.headers["X-RateLimit-Limit"] == "60"
    for tier, limit in (("pro", "600"), ("team", "6000"), ("free", "60")):
        assert patch_user(client, admin, user["user"]["id"], tier=tier).status_code == 200
        response = client.get("/v1/auth/me", headers=bearer(user))
        assert response.headers["X-RateLimit-Limit"] == limit, tier
        assert response.get_json()["data"]["tier"] == tier


def test_tier_applies_to_the_users_keys_too(client, app):
    admin = make_admin(app, client)
    user = signup(client, "customer@example.com")
    key = create_key(client, user, scopes=["keys:read"])["key"]
    assert client.get("/v1/api-keys", headers=bearer(key)).headers["X-RateLimit-Limit"] == "60"
    patch_user(client, admin, user["user"]["id"], tier="pro")
    assert client.get("/v1/api-keys", headers=bearer(key)).headers["X-RateLimit-Limit"] == "600"


def test_admin_created_through_the_service_logs_in(client, app):
    from plugins.auth import service

    with app.app_context():
        user = service.create_user("boss@example.com", PASSWORD, role="admin", tier="team")
        assert (user.role, user.tier) == ("admin", "team")
    data = login_ok(client, "boss@example.com")
    assert data["user"]["role"] == "admin"
