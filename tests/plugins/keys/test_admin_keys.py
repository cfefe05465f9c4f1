"""Key administration: every user's keys, revocation of anyone's key, statistics."""
from __future__ import annotations

import pytest

from tests.support.identity import bearer, create_key, error_of, key_digest, make_admin, signup

pytestmark = pytest.mark.db


@pytest.fixture
def scene(client, app):
    admin = make_admin(app, client)
    alice = signup(client, "alice@example.com")
    bob = signup(client, "bob@example.com")
    keys = {
        "a1": create_key(client, alice, name="a1", tags=["ci"]),
        "a2": create_key(client, alice, name="a2", environment="test"),
        "b1": create_key(client, bob, name="b1", tags=["ci"]),
    }
    return {"admin": admin, "alice": alice, "bob": bob, "keys": keys}


def test_admin_lists_every_key_masked(client, app, scene):
    body = client.get("/v1/admin/keys", headers=bearer(scene["admin"])).get_json()
    assert body["pagination"]["total"] == 3
    assert sorted(k["name"] for k in body["data"]) == ["a1", "a2", "b1"]
    text = str(body)
    for created in scene["keys"].values():
        assert created["key"] not in text and key_digest(app, created["key"]) not in text
    by_user = client.get(f"/v1/admin/keys?user_id={scene['bob']['user']['id']}",
                         headers=bearer(scene["admin"])).get_json()["data"]
    assert [k["name"] for k in by_user] == ["b1"]
    tagged = client.get("/v1/admin/keys?tag=ci&per_page=1", headers=bearer(scene["admin"])).get_json()
    assert tagged["pagination"]["total"] == 2 and len(tagged["data"]) == 1
    test_env = client.get("/v1/admin/keys?environment=test", headers=bearer(scene["admin"])).get_json()["data"]
    assert [k["name"] for k in test_env] == ["a2"]


def test_admin_revokes_anyones_key(client, scene):
    b1 = scene["keys"]["b1"]
    assert client.get("/v1/auth/me", headers=bearer(b1["key"])).status_code == 200
    assert client.delete(f"/v1/admin/keys/{b1['id']}", headers=bearer(scene["admin"])).status_code == 204
    error_of(client.get("/v1/auth/me", headers=bearer(b1["key"])), 401, "KEY_REVOKED")
    owner_view = client.get(f"/v1/api-keys/{b1['id']}", headers=bearer(scene["bob"])).get_json()["data"]
    assert owner_view["status"] == "revoked"
    error_of(client.delete("/v1/admin/keys/key_doesnotexist", headers=bearer(scene["admin"])), 404, "NOT_FOUND")
    revoked = client.get("/v1/admin/keys?status=revoked", headers=bearer(scene["admin"])).get_json()["data"]
    assert [k["id"] for k in revoked] == [b1["id"]]


def test_admin_stats(client, scene):
    a1, a2 = scene["keys"]["a1"], scene["keys"]["a2"]
    for _ in range(4):
        client.get("/v1/auth/me", headers=bearer(a1["key"]))
    client.post("/v1/api-keys", json={"name": "x", "scopes": ["keys:read"]}, headers=bearer(a2["key"]))  # 403
    client.delete(f"/v1/admin/keys/{scene['keys']['b1']['id']}", headers=bearer(scene["admin"]))
    response = client.get("/v1/admin/keys/stats", headers=bearer(scene["admin"]))
    assert response.status_code == 200
    stats = response.get_json()["data"]
    assert (stats["total"], stats["active"], stats["revoked"], stats["expired"]) == (3, 2, 1, 0)
    assert stats["by_environment"] == {"live": 2, "test": 1}
    assert (stats["requests"], stats["errors"]) == (5, 1)
    assert stats["top_keys"][0] == {"id": a1["id"], "name": "a1", "user_id": scene["alice"]["user"]["id"],
                                    "requests": 4}
    assert "lnos_" not in response.get_data(as_text=True)


def test_admin_key_routes_need_the_admin_scope_even_for_an_admins_narrow_key(client, scene):
    narrow = create_key(client, scene["admin"], scopes=["keys:read"])["key"]
    error_of(client.get("/v1/admin/keys", headers=bearer(narrow)), 403, "INSUFFICIENT_SCOPE")
    wide = create_key(client, scene["admin"], scopes=["admin:keys"])["key"]
    assert client.get("/v1/admin/keys", headers=bearer(wide)).status_code == 200
