"""The official `openai` SDK, unchanged, against a real LunaOS (gunicorn, gevent workers, Redis) whose only
provider is a real llama-cpp-python server: `base_url=<server>/v1` and a LunaOS API key are all it takes."""
from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from tests.conftest import base_config
from tests.plugins.ai.conftest import with_model
from tests.support.identity import PASSWORD
from tests.support.servers import gunicorn, subprocess_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("llm")]


def call(url: str, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


@pytest.fixture
def server(make_app, schema, worker, redis_url, redis_client, llm_upstream, tmp_path):
    make_app()  # removes this test's rows from the shared database afterwards
    config = {**base_config(schema, worker), "REDIS_URL": redis_url,
              **with_model(llm_upstream, LLM_USAGE_FLUSH_SECONDS=0.2)}
    with gunicorn(subprocess_env(config), tmp_path, workers=2, worker_class="gevent", ready_timeout=90) as running:
        yield running


@pytest.fixture
def keys(server):
    """(a key with ai:use, a key without it, the session token) of a user signed up on the server."""
    status, body = call(server.url, "POST", "/v1/auth/signup", body={"email": "sdk@example.com",
                                                                     "password": PASSWORD})
    assert status == 201, body
    session = body["data"]["access_token"]
    made = []
    for scopes in (["ai:use"], ["keys:read"]):
        status, body = call(server.url, "POST", "/v1/api-keys", session, {"name": "sdk", "scopes": scopes})
        assert status == 201, body
        made.append(body["data"]["key"])
    return made[0], made[1], session


def test_the_openai_sdk_works_unchanged(server, keys, llm_upstream):
    import openai

    key, _, session = keys
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)

    # Non-streamed, with the raw response for the gateway's headers.
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0)
    assert raw.headers["x-llm-provider"] == llm_upstream.name
    assert "outcome=ok" in raw.headers["x-llm-attempts"]
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "smollm2"
    message = completion.choices[0].message
    assert message.role == "assistant" and message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert 0 < completion.usage.completion_tokens <= 8

    # Streamed with usage.
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and message.content.strip()  # words not compared: see test_openai_wire
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [completion.choices[0].finish_reason]
    assert chunks[-1].choices == []
    streamed = chunks[-1].usage
    assert streamed.total_tokens == streamed.prompt_tokens + streamed.completion_tokens
    assert 0 < streamed.completion_tokens <= 8 and streamed.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])

    # Models.
    assert [m.id for m in client.models.list()] == ["smollm2"]
    assert client.models.retrieve("smollm2").owned_by == llm_upstream.name

    # A session token works as the api_key too.
    as_user = openai.OpenAI(base_url=server.url + "/v1", api_key=session, max_retries=0)
    assert as_user.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=2).choices[0].message.content is not None

    # Both chats of the key were booked (the stream too), whichever worker served them.
    def booked():
        status, body = call(server.url, "GET", "/v1/ai/usage", key)
        assert status == 200, body
        rows = body["data"]
        return rows if sum(r["requests"] for r in rows) == 2 else None

    rows = wait_until(booked, timeout=20, interval=0.2, message="the usage of both chats")
    assert sum(r["completion_tokens"] for r in rows) == completion.usage.completion_tokens + streamed.completion_tokens
    assert sum(r["prompt_tokens"] for r in rows) == completion.usage.prompt_tokens + streamed.prompt_tokens


def test_the_openai_sdk_sees_openai_errors(server, keys):
    import openai

    key, no_ai_key, _ = keys
    hello = [{"role": "user", "content": "Hi"}]

    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="lnos_live_" + "x" * 49, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        bad.chat.completions.create(model="smollm2", messages=hello)
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-17", messages=hello)
    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-17", messages=hello, stream=True)

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="smollm2", messages=hello, n=3)
    assert raised.value.param == "n"

    no_scope = openai.OpenAI(base_url=server.url + "/v1", api_key=no_ai_key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        no_scope.chat.completions.create(model="smollm2", messages=hello)
    assert raised.value.code == "insufficient_scope"


def test_a_client_hanging_up_mid_stream_is_charged_for_what_it_got(server, keys):
    """Through gunicorn: the client closes its connection after a few chunks; the server notices on its
    next write, stops the upstream stream, frees the provider and books the text generated so far."""
    key, _, _ = keys
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    body = {"model": "smollm2", "max_tokens": 300, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]}
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body),
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    received = [response.readline() for _ in range(6)]  # three chunks (each a data line and a blank line)
    assert all(line.startswith(b"data: {") for line in received[::2]), received
    connection.sock.close()  # hang up without reading the rest
    connection.close()

    def booked():
        status, found = call(server.url, "GET", "/v1/ai/usage", key)
        assert status == 200, found
        return found["data"] if found["data"] else None

    rows = wait_until(booked, timeout=30, interval=0.2, message="the usage of the abandoned stream")
    assert sum(r["requests"] for r in rows) == 1
    assert 1 <= sum(r["completion_tokens"] for r in rows) < 300

    def idle():
        status, found = call(server.url, "GET", "/v1/ai/status", key)
        return found["data"]["providers"][0]["active_requests"] == 0

    wait_until(idle, timeout=30, interval=0.2, message="the provider to have no request in flight")
