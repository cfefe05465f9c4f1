"""Object-level authorisation: nobody reaches another user's keys, not even by knowing their ids."""
from __future__ import annotations

import pytest

from tests.support.identity import bearer, create_key, error_of, signup, without_request_id

pytestmark = pytest.mark.db


@pytest.fixture
def scene(client):
    alice = signup(client, "alice@example.com")
    bob = signup(client, "bob@example.com")
    alice_key = create_key(client, alice, name="alice's", scopes=["keys:read", "keys:write"])
    bob_key = create_key(client, bob, name="bob's", scopes=["keys:read", "keys:write"], tags=["shared-tag"])
    return {"alice": alice, "alice_key": alice_key, "bob": bob, "bob_key": bob_key}


def attackers(scene):
    yield "alice's session", scene["alice"]
    yield "alice's key", scene["alice_key"]["key"]


def test_another_users_key_looks_exactly_like_an_unknown_one(client, scene):
    bob_id = scene["bob_key"]["id"]
    unknown_id = "key_" + "0" * 26
    for label, credential in attackers(scene):
        for method, suffix, body in (("get", "", None), ("delete", "", None), ("post", "/rotate", {})):
            call = getattr(client, method)
            kwargs = {"headers": bearer(credential)}
            if body is not None:
                kwargs["json"] = body
            theirs = call(f"/v1/api-keys/{bob_id}{suffix}", **kwargs)
            unknown = call(f"/v1/api-keys/{unknown_id}{suffix}", **kwargs)
            error_of(theirs, 404, "NOT_FOUND")
            error_of(unknown, 404, "NOT_FOUND")
            assert without_request_id(theirs) == without_request_id(unknown), (label, method, suffix)
            assert "bob" not in theirs.get_data(as_text=True)


def test_bobs_key_survives_every_attempt(client, scene):
    bob_key = scene["bob_key"]
    for _, credential in attackers(scene):
        client.delete(f"/v1/api-keys/{bob_key['id']}", headers=bearer(credential))
        client.post(f"/v1/api-keys/{bob_key['id']}/rotate", json={}, headers=bearer(credential))
    assert client.get("/v1/auth/me", headers=bearer(bob_key["key"])).get_json()["data"]["email"] == "bob@example.com"
    got = client.get(f"/v1/api-keys/{bob_key['id']}", headers=bearer(scene["bob"])).get_json()["data"]
    assert got["status"] == "active"
    assert got["masked_key"] == bob_key["masked_key"]  # not rotated


def test_lists_show_only_the_callers_keys(client, scene):
    for _, credential in attackers(scene):
        for query in ("", "?status=active", "?tag=shared-tag", "?environment=live", "?per_page=100"):
            body = client.get(f"/v1/api-keys{query}", headers=bearer(credential)).get_json()
            ids = {k["id"] for k in body["data"]}
            assert scene["bob_key"]["id"] not in ids
            assert all(k["user_id"] == scene["alice"]["user"]["id"] for k in body["data"])
            assert body["pagination"]["total"] == len(ids)
    mine = client.get("/v1/api-keys", headers=bearer(scene["bob"])).get_json()["data"]
    assert [k["id"] for k in mine] == [scene["bob_key"]["id"]]


def test_a_user_cannot_use_the_admin_routes_to_reach_other_keys(client, scene):
    for _, credential in attackers(scene):
        error_of(client.get("/v1/admin/keys", headers=bearer(credential)), 403, "INSUFFICIENT_SCOPE")
        error_of(client.delete(f"/v1/admin/keys/{scene['bob_key']['id']}", headers=bearer(credential)), 403,
                 "INSUFFICIENT_SCOPE")
        error_of(client.get("/v1/admin/keys/stats", headers=bearer(credential)), 403, "INSUFFICIENT_SCOPE")
    assert client.get("/v1/auth/me", headers=bearer(scene["bob_key"]["key"])).status_code == 200
