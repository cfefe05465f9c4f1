"""A streamed execution through the production server: gunicorn with one gevent worker, no Redis (the
embedded default: the run is an in-process job), a real model upstream. The stream must not stall the
worker: /health answers while it is open."""
from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from tests.conftest import base_config
from tests.support.identity import PASSWORD
from tests.support.llm_server import llm_providers
from tests.support.servers import SSEReader, gunicorn, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("llm")]


def connect(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=60)


def call(url: str, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    connection = connect(url)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def open_stream(url: str, path: str, token: str, body: Any = None, headers: dict | None = None):
    connection = connect(url)
    connection.request("POST" if body is not None else "GET", path,
                       body=json.dumps(body) if body is not None else None,
                       headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                                **(headers or {})})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type").startswith("text/event-stream")
    return connection, SSEReader(iter(lambda: response.read1(4096), b""))


def test_streamed_execution_under_gunicorn_gevent(make_app, schema, worker, llm_upstream, tmp_path):
    make_app()  # removes this test's rows from the shared database afterwards
    config = {**base_config(schema, worker), "LLM_PROVIDERS": llm_providers(llm_upstream), "LLM_OFFLINE": False}
    with gunicorn(subprocess_env(config), tmp_path, workers=1, worker_class="gevent", ready_timeout=90) as server:
        status, body = call(server.url, "POST", "/v1/auth/signup", body={"email": "gun@example.com",
                                                                         "password": PASSWORD})
        assert status == 201, body
        token = body["data"]["access_token"]
        status, agent = call(server.url, "POST", "/v1/agents", token, {
            "name": "Counter", "system_prompt": "You count.", "temperature": 0})
        assert status == 201, agent

        connection, reader = open_stream(server.url, "/v1/agents/execute", token, {
            "agent": agent["data"]["id"], "input": "Count from one to ten.", "max_tokens": 24})
        try:
            start = reader.next_event()
            assert start["event"] == "start"
            # The open stream leaves the (single) worker free to serve others.
            health, _ = call(server.url, "GET", "/health")
            assert health in (200, 503)
            rest = reader.events_until(lambda e: e["event"] in ("done", "error"))
        finally:
            connection.close()
        assert rest[-1]["event"] == "done", rest[-1]
        assert {e["event"] for e in rest[:-1]} == {"token"}
        execution_id = start["data"]["execution_id"]

        status, run = call(server.url, "GET", f"/v1/executions/{execution_id}", token)
        assert status == 200 and run["data"]["status"] == "succeeded"
        assert run["data"]["output"] == rest[-1]["data"]["output"]
        connection, reader = open_stream(server.url, f"/v1/executions/{execution_id}/events", token,
                                         headers={"Last-Event-ID": "1"})
        try:
            replay = reader.events_until(lambda e: e["event"] == "done")
        finally:
            connection.close()
        assert replay == rest
