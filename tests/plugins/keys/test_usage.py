"""Per-key usage: requests, errors and last use are reported, without a database write per request."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.identity import StatementCounter, bearer, create_key, signup

pytestmark = pytest.mark.db

N = 20


def usage_of(client, owner, key_id):
    data = client.get(f"/v1/api-keys/{key_id}", headers=bearer(owner)).get_json()["data"]
    return data["usage"], data["last_used_at"]


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def exercise(app, client):
    owner = signup(client, "metered@example.com")
    created = create_key(client, owner, scopes=["keys:read"])
    key = created["key"]
    before = datetime.now(UTC) - timedelta(seconds=1)
    with StatementCounter(app, match="update api_keys") as updates:
        for _ in range(N):
            assert client.get("/v1/auth/me", headers=bearer(key)).status_code == 200
        for _ in range(3):  # refused for lack of a scope: counted as errors
            assert client.post("/v1/api-keys", json={"name": "x", "scopes": ["keys:read"]},
                               headers=bearer(key)).status_code == 403
    assert updates.count < N + 3, updates.statements
    usage, last_used = usage_of(client, owner, created["id"])
    assert usage == {"requests": N + 3, "errors": 3}
    assert last_used is not None
    assert before <= parse_time(last_used) <= datetime.now(UTC) + timedelta(seconds=1)
    return owner, created


def test_usage_is_counted_without_a_write_per_request(client, app):
    owner, created = exercise(app, client)
    # The counts are also in the list, and requests by the owner's session are not the key's.
    listed = client.get("/v1/api-keys", headers=bearer(owner)).get_json()["data"][0]
    assert listed["usage"] == {"requests": N + 3, "errors": 3}


def test_usage_with_redis_is_counted_without_a_write_per_request(redis_app):
    exercise(redis_app, redis_app.test_client())


def test_usage_reaches_the_database_eventually(make_app):
    from app.extensions import db
    from plugins.keys import usage
    from tests.support.identity import rows

    app = make_app(KEYS_USAGE_FLUSH_SECONDS=0.0)  # flush on every request: the slowest, simplest path
    client = app.test_client()
    owner = signup(client, "persisted@example.com")
    created = create_key(client, owner)
    for _ in range(4):
        client.get("/v1/auth/me", headers=bearer(created["key"]))
    with app.app_context():
        usage.flush()
        db.session.remove()
    row = next(r for r in rows(app, "api_keys") if r["id"] == created["id"])
    assert (row["request_count"], row["error_count"]) == (4, 0)
    assert row["last_used_at"] is not None


def test_usage_with_redis_is_persisted_and_not_double_counted(make_app, redis_url, redis_client):
    from plugins.keys import usage
    from tests.support.identity import rows

    app = make_app(REDIS_URL=redis_url)
    client = app.test_client()
    owner = signup(client, "persisted@example.com")
    created = create_key(client, owner)
    for _ in range(5):
        client.get("/v1/auth/me", headers=bearer(created["key"]))
    with app.app_context():
        usage.flush()
        usage.persist_from_redis()
    row = next(r for r in rows(app, "api_keys") if r["id"] == created["id"])
    assert row["request_count"] == 5
    # What the API reports is the database plus what is still pending: nothing counted twice.
    assert usage_of(client, owner, created["id"])[0] == {"requests": 5, "errors": 0}
    client.get("/v1/auth/me", headers=bearer(created["key"]))
    assert usage_of(client, owner, created["id"])[0] == {"requests": 6, "errors": 0}


def test_usage_in_redis_is_shared_by_two_apps(make_app, redis_url, redis_client):
    one = make_app(REDIS_URL=redis_url).test_client()
    two = make_app(REDIS_URL=redis_url).test_client()
    owner = signup(one, "shared@example.com")
    created = create_key(one, owner)
    for _ in range(3):
        one.get("/v1/auth/me", headers=bearer(created["key"]))
    for _ in range(2):
        two.get("/v1/auth/me", headers=bearer(created["key"]))
    # Each app flushes its buffer when it next reads usage; afterwards both report the total.
    usage_of(one, owner, created["id"])
    assert usage_of(two, owner, created["id"])[0] == {"requests": 5, "errors": 0}
    assert usage_of(one, owner, created["id"])[0] == {"requests": 5, "errors": 0}
