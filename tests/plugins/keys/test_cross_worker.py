"""Real gunicorn, 2 gevent workers, Redis: a key revoked through one worker fails at once on every worker."""
from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import base_config
from tests.support.identity import PASSWORD
from tests.support.servers import gunicorn, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.db]


class Server:
    """Every request on a fresh connection, so any worker may accept it."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, str, Any]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Connection": "close"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            return response.status, response.getheader("X-Served-By") or "", json.loads(raw) if raw else None
        finally:
            connection.close()

    def spread(self, method: str, path: str, token: str, rounds: int, width: int = 8) -> list[tuple[int, str, Any]]:
        """`rounds` batches of `width` concurrent requests, each on its own connection."""
        results = []
        with ThreadPoolExecutor(width) as pool:
            for _ in range(rounds):
                results += list(pool.map(lambda _: self.call(method, path, token), range(width)))
        return results


def by_worker(results):
    workers: dict[str, list[tuple[int, Any]]] = {}
    for status, pid, body in results:
        workers.setdefault(pid, []).append((status, body))
    return workers


def test_a_revoked_key_fails_on_the_next_request_on_every_worker(make_app, schema, worker, redis_url, redis_client,
                                                                 tmp_path):
    make_app(REDIS_URL=redis_url)  # cleans this test's rows from the shared database afterwards
    env = subprocess_env({**base_config(schema, worker), "REDIS_URL": redis_url})
    with gunicorn(env, tmp_path, workers=2, worker_class="gevent", ready_timeout=90) as server:
        api = Server(server.url)
        status, _, body = api.call("POST", "/v1/auth/signup", body={"email": "fleet@example.com",
                                                                     "password": PASSWORD})
        assert status == 201, body
        session = body["data"]["access_token"]
        status, _, body = api.call("POST", "/v1/api-keys", session, {"name": "fleet", "scopes": ["keys:read"]})
        assert status == 201, body
        key, key_id = body["data"]["key"], body["data"]["id"]

        # Warm-up: until both workers have verified (and cached) the key more than once.
        served: list[tuple[int, str, Any]] = []
        for _ in range(25):
            served += api.spread("GET", "/v1/auth/me", key, rounds=1)
            workers = by_worker(served)
            if len(workers) >= 2 and all(len(answers) >= 2 for answers in workers.values()):
                break
        workers = by_worker(served)
        assert len(workers) == 2, f"every request landed on one worker: {list(workers)}"
        assert all(status == 200 for answers in workers.values() for status, _ in answers), workers

        status, pid, body = api.call("DELETE", f"/v1/api-keys/{key_id}", session)
        assert status == 204, body

        # The very next request on every worker is refused: no TTL to wait out, no stale cache.
        after: list[tuple[int, str, Any]] = []
        for _ in range(25):
            after += api.spread("GET", "/v1/auth/me", key, rounds=1)
            if len(by_worker(after)) >= 2:
                break
        workers_after = by_worker(after)
        assert set(workers_after) == set(workers), f"not every worker answered after the revocation: {workers_after}"
        for worker_pid, answers in workers_after.items():
            for status, body in answers:
                assert status == 401, (worker_pid, status, body)
                assert body["error"]["code"] == "KEY_REVOKED", (worker_pid, body)

        # The session that revoked it still works everywhere.
        assert {status for status, _, _ in api.spread("GET", "/v1/auth/me", session, rounds=2)} == {200}
