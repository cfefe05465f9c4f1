"""Cross-process cache invalidation over Redis pub/sub (app.invalidation)."""
from __future__ import annotations

import time

import pytest

from app import invalidation


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def healthy_bus(app):
    with app.app_context():
        bus = invalidation.get()
        bus.version("probe", "x")  # starts the listener
    wait_until(lambda: bus.healthy)
    return bus


def test_without_redis_the_bus_is_never_trusted(app):
    with app.app_context():
        bus = invalidation.get()
        bus.version("t", "k")
        assert bus.healthy is False


def test_an_announcement_reaches_every_process(make_app, redis_url, redis_client):
    first, second = make_app(REDIS_URL=redis_url), make_app(REDIS_URL=redis_url)
    bus1, bus2 = healthy_bus(first), healthy_bus(second)
    before = bus2.version("auth.user", "usr_1")
    untouched = bus2.version("auth.user", "usr_2")
    with first.app_context():
        bus1.publish("auth.user", "usr_1")
    wait_until(lambda: bus2.version("auth.user", "usr_1") != before)
    assert bus2.version("auth.user", "usr_2") == untouched  # only that key moved


def test_the_publisher_sees_its_own_change_at_once(make_app, redis_url, redis_client):
    app = make_app(REDIS_URL=redis_url)
    bus = healthy_bus(app)
    before = bus.version("auth.user", "usr_1")
    bus.publish("auth.user", "usr_1")
    assert bus.version("auth.user", "usr_1") != before


@pytest.mark.db
def test_cached_checks_cost_no_round_trip_and_revocation_still_lands(make_app, redis_url, redis_client):
    from tests.support.identity import bearer, create_key, signup

    first, second = make_app(REDIS_URL=redis_url), make_app(REDIS_URL=redis_url)
    healthy_bus(first), healthy_bus(second)
    one, two = first.test_client(), second.test_client()
    session = signup(one, "fast@example.com")
    key = create_key(one, session, scopes=["keys:read"])
    assert two.get("/v1/auth/me", headers=bearer(key["key"])).status_code == 200  # cached on the second app
    calls = []
    original = redis_client.__class__.execute_command
    with second.app_context():
        from app import redis_client as shared

        client = shared.client()
        client_class = type(client)
        counted = lambda self, *a, **kw: (calls.append(a[0]), original(self, *a, **kw))[1]  # noqa: E731
        client_class.execute_command = counted
        try:
            assert two.get("/v1/auth/me", headers=bearer(key["key"])).status_code == 200
        finally:
            client_class.execute_command = original
    assert not [c for c in calls if c in ("MGET", "GET")], calls  # the identity check read nothing from Redis
    assert one.delete(f"/v1/api-keys/{key['id']}", headers=bearer(session)).status_code == 204
    wait_until(lambda: two.get("/v1/auth/me", headers=bearer(key["key"])).status_code == 401, timeout=2)
    assert two.get("/v1/auth/me", headers=bearer(key["key"])).get_json()["error"]["code"] == "KEY_REVOKED"


def test_a_lost_connection_stops_trusting_caches(make_app):
    # Nothing listens on port 1: the listener never subscribes, so caches are never trusted.
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    with app.app_context():
        bus = invalidation.get()
        bus.version("t", "k")
    time.sleep(0.3)
    assert bus.healthy is False


def test_the_listener_thread_ends_with_its_bus(redis_url):
    """A bus whose app is gone stops listening (tests and reloads build many apps)."""
    import gc
    import threading
    import uuid

    from redis import Redis

    from app.invalidation import Invalidation

    client = Redis.from_url(redis_url)
    channel = f"test-invalidate-{uuid.uuid4().hex}"
    before = set(threading.enumerate())
    bus = Invalidation(client, channel)
    bus.version("topic", "key")  # starts the listener
    (listener,) = [t for t in threading.enumerate() if t not in before and t.name == "lunaos-invalidation"]
    del bus
    gc.collect()
    client.publish(channel, "topic\x00key")  # wakes it from its wait
    listener.join(timeout=10)
    assert not listener.is_alive()
