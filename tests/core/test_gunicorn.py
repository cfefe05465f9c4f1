"""The production shape: real gunicorn with 2 gevent workers, Redis, a real RQ worker, the test's database."""
from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app import tasks
from tests.conftest import base_config
from tests.support import test_tasks  # noqa: F401  (the job kinds the worker runs)
from tests.support.servers import SSEReader, flask_worker, forget_rq_state, gunicorn, subprocess_env, wait_until

pytestmark = pytest.mark.slow

TOKEN = "gunicorn-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Client:
    def __init__(self, url: str):
        self.host, self.port = url.removeprefix("http://").split(":")

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        connection.request(method, path, headers=headers or {})
        return connection.getresponse()

    def json(self, path: str, headers: dict[str, str] | None = None,
             method: str = "GET") -> tuple[http.client.HTTPResponse, Any]:
        response = self.request(method, path, headers)
        return response, json.loads(response.read())


def chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    # read1 returns what has arrived (one chunk of the chunked body) instead of waiting to fill a buffer.
    while True:
        data = response.read1(65536)
        if not data:
            return
        yield data


@pytest.mark.db
def test_gunicorn_gevent_workers_serve_the_middleware_and_live_job_events(make_app, schema, worker, redis_url,
                                                                           redis_client, tmp_path):
    app = make_app(REDIS_URL=redis_url)  # the test's own view of the same database and Redis
    env = subprocess_env({**base_config(schema, worker), "REDIS_URL": redis_url}, token=TOKEN, user_id="usr_a",
                         overrides={"JOBS_PROGRESS_INTERVAL": 0.05})
    # The worker boots while gunicorn does.
    with flask_worker(env, tmp_path, burst=False, name=f"{worker}-gunicorn") as rq_worker, \
            gunicorn(env, tmp_path, workers=2, worker_class="gevent") as server:
        try:
            _exercise(Client(server.url), app, worker, redis_url, redis_client)
        except Exception as error:  # the servers' own logs say why, not just the client's view
            raise AssertionError(f"{error}\n--- gunicorn ---\n{server.logs()}\n--- worker ---\n{rq_worker.logs()}") \
                from error
        finally:
            forget_rq_state(redis_client, app)
        # Our logging set-up must not break gunicorn's own lines, and nothing made in the master
        # (timer threads) may fail in the forked workers.
        logs = server.logs(tail=50_000_000)  # the whole log: the boot lines come first
        assert "Booting worker with pid" in logs
        assert "--- Logging error ---" not in logs and "KeyError" not in logs, logs


def _exercise(client: Client, app: Any, worker: str, redis_url: str, redis_client: Any) -> None:
    # Middleware on every response.
    response, body = client.json("/health", {"X-Request-ID": "probe-42"})
    assert response.status == 200 and body["services"]["database"] == "ok"
    assert response.getheader("X-Request-ID") == "probe-42"
    assert response.getheader("Server-Timing").startswith("total;dur=")
    assert response.getheader("X-Frame-Options") == "DENY"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert "default-src 'self'" in response.getheader("Content-Security-Policy")
    assert response.getheader("Referrer-Policy") and response.getheader("Cross-Origin-Opener-Policy")
    response, body = client.json("/v1/no-such-route")
    assert response.status == 404
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["error"]["request_id"] == response.getheader("X-Request-ID")
    assert response.getheader("X-Request-ID").startswith("req_")
    wait_until(lambda: client.json("/health")[1]["services"]["queue"].startswith("ok: "), timeout=60,
               message="the RQ worker to register")
    # Both gunicorn workers are up (each response names its process) before the streams open.
    answered: set[str] = set()
    wait_until(lambda: answered.add(client.json("/health")[0].getheader("X-Served-By")) or len(answered) == 2,
               timeout=60, interval=0, message="both gunicorn workers to answer")

    gate = f"lunaos-test-{worker}:gate:{uuid.uuid4()}"
    with app.app_context():
        job_id = tasks.enqueue("test.gated", {"gate": gate, "redis_url": redis_url}, owner_id="usr_a").id

    # Several streams, until both gunicorn workers serve at least one.
    streams: list[http.client.HTTPResponse] = []
    readers: list[SSEReader] = []
    served_by: set[str] = set()
    try:
        while len(streams) < 4 or len(served_by) < 2:
            assert len(streams) < 40, f"every stream landed on the same gunicorn worker: {served_by}"
            stream = client.request("GET", f"/v1/jobs/{job_id}/events", AUTH)
            assert stream.status == 200, stream.read()
            assert stream.getheader("Content-Type").startswith("text/event-stream")
            assert stream.getheader("X-Accel-Buffering") == "no"
            served_by.add(stream.getheader("X-Served-By"))
            streams.append(stream)
            readers.append(SSEReader(chunks(stream)))
        try:
            # The job waits at its gate: progress 10 reaches every client while it runs, not at the end.
            for reader in readers:
                seen = reader.events_until(lambda e: e["data"].get("progress") == 10)
                assert seen[-1]["data"]["status"] == "running"
        finally:
            redis_client.set(gate, 1, ex=60)
        for reader in readers:
            events = reader.events_until(lambda e: e["event"] == "status" and e["data"]["status"] in tasks.TERMINAL)
            assert events[-1]["data"]["status"] == "succeeded"
            assert events[-1]["data"]["result"] == {"gate": gate, "attempt": 1}
            assert reader.next_frame() is None  # the server ends the stream after the final status
    finally:
        for stream in streams:
            stream.close()


def test_embedded_default_in_process_jobs_and_sse_under_one_gevent_worker(make_app, schema, worker, tmp_path):
    """No Redis: the job runs in a greenlet of the serving process, and so does its event stream."""
    make_app()  # registers the database for clean-up after the test
    env = subprocess_env(base_config(schema, worker), token=TOKEN, user_id="usr_a",
                         overrides={"JOBS_PROGRESS_INTERVAL": 0.05, "JOBS_CANCEL_CHECK_SECONDS": 0.1})
    with gunicorn(env, tmp_path, workers=1, worker_class="gevent") as server:
        client = Client(server.url)
        response, body = client.json("/test/jobs/test.cancellable", AUTH, method="POST")
        assert response.status == 202, body
        stream = client.request("GET", f"/v1/jobs/{body['id']}/events", AUTH)
        try:
            reader = SSEReader(chunks(stream))
            assert reader.events_until(lambda e: e["data"].get("status") == "running")
            # The job loops in a greenlet of this very worker, yet requests are still served.
            response, health = client.json("/health")
            assert response.status == 200 and health["services"]["queue"] == "ok: in-process"
            response, cancelled = client.json(f"/v1/jobs/{body['id']}/cancel", AUTH, method="POST")
            assert cancelled["data"]["cancel_requested"] is True
            final = reader.events_until(lambda e: e["data"].get("status") in tasks.TERMINAL)[-1]
            assert final["data"]["status"] == "cancelled"
            assert reader.next_frame() is None
        except Exception as error:
            raise AssertionError(f"{error}\n--- gunicorn ---\n{server.logs()}") from error
        finally:
            stream.close()
