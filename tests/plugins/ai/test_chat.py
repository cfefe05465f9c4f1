"""`POST /v1/ai/chat` against a real model server (llama-cpp-python over SmolLM2): JSON and SSE answers,
provider headers, usage books (streams included, also when the client leaves or the provider dies)."""
from __future__ import annotations

import pytest

from tests.plugins.ai.conftest import kill, sse_frames, with_model
from tests.support.identity import bearer, create_key, error_of, signup

pytestmark = pytest.mark.xdist_group("llm")

HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]
ANSWER_FIELDS = {"response", "model", "provider", "finish_reason", "tokens_used", "processing_time_ms"}
LONG = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


@pytest.fixture
def app(make_app, llm_upstream):
    return make_app(**with_model(llm_upstream))


def chat(client, credential, **body):
    body.setdefault("messages", HELLO)
    body.setdefault("temperature", 0)
    body.setdefault("max_tokens", 8)
    return client.post("/v1/ai/chat", json=body, headers=bearer(credential), buffered=not body.get("stream"))


def usage_rows(client, credential):
    response = client.get("/v1/ai/usage", headers=bearer(credential))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def check_tokens(tokens_used, max_completion):
    assert set(tokens_used) == {"prompt", "completion", "total"}
    assert tokens_used["prompt"] > 0
    assert 0 < tokens_used["completion"] <= max_completion
    assert tokens_used["total"] == tokens_used["prompt"] + tokens_used["completion"]


def test_chat_answers_with_the_model(client, ai_key, llm_upstream):
    response = chat(client, ai_key)
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()["data"]
    assert set(data) == ANSWER_FIELDS
    assert isinstance(data["response"], str) and data["response"].strip()
    assert data["model"] == llm_upstream.model
    assert data["provider"] == llm_upstream.name
    assert data["finish_reason"] in ("stop", "length")
    check_tokens(data["tokens_used"], 8)
    assert data["processing_time_ms"] >= 0
    assert response.headers["X-LLM-Provider"] == llm_upstream.name
    assert response.headers["X-LLM-Attempts"].startswith(f"{llm_upstream.name};outcome=ok;dur=")
    # Asked again, answered again (words not compared: a llama.cpp server reusing its prompt cache can
    # answer a repeat differently even at temperature 0).
    assert chat(client, ai_key).get_json()["data"]["response"].strip()


def test_named_provider_and_model(client, ai_key, llm_upstream):
    response = chat(client, ai_key, provider=llm_upstream.name, model=llm_upstream.model)
    assert response.status_code == 200
    assert response.get_json()["data"]["provider"] == llm_upstream.name
    error = error_of(chat(client, ai_key, provider="nowhere"), 422, "VALIDATION_ERROR")
    assert "provider" in error["details"]["fields"]
    error_of(chat(client, ai_key, model="gpt-17"), 404, "MODEL_NOT_FOUND")
    error_of(chat(client, ai_key, model="gpt-17", stream=True), 404, "MODEL_NOT_FOUND")


def test_stream_sends_tokens_then_done(client, ai_key, llm_upstream):
    response = chat(client, ai_key, stream=True, max_tokens=12)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-LLM-Provider"] == llm_upstream.name
    assert response.headers["X-LLM-Attempts"].startswith(f"{llm_upstream.name};outcome=ok")
    frames = sse_frames(response)
    kinds = [f["event"] for f in frames]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"token"}, kinds
    text = "".join(f["data"]["delta"] for f in frames[:-1])
    done = frames[-1]["data"]
    assert set(done) == ANSWER_FIELDS
    assert done["response"] == text and text.strip()
    assert (done["model"], done["provider"]) == (llm_upstream.model, llm_upstream.name)
    check_tokens(done["tokens_used"], 12)
    plain = chat(client, ai_key, max_tokens=12).get_json()["data"]  # the same question without streaming
    assert plain["response"].strip() and plain["model"] == done["model"]


@pytest.mark.db
def test_usage_is_booked_per_user_and_key(client, owner, ai_key):
    other_key = create_key(client, owner, name="second", scopes=["ai:use"])["key"]
    answers = [chat(client, ai_key).get_json()["data"]["tokens_used"]]
    streamed = sse_frames(chat(client, ai_key, stream=True))
    answers.append(streamed[-1]["data"]["tokens_used"])
    answers.append(chat(client, owner).get_json()["data"]["tokens_used"])  # a session: no key
    answers.append(chat(client, other_key).get_json()["data"]["tokens_used"])

    rows = usage_rows(client, owner)
    by_key = {}
    for row in rows:
        by_key.setdefault(row["key_id"], []).append(row)
    assert len(by_key) == 3  # the two keys and the session
    key_rows = [r for key_id, found in by_key.items() if key_id for r in found]
    assert sum(r["requests"] for r in key_rows) == 3
    assert sum(r["requests"] for r in by_key[None]) == 1
    assert sum(r["total_tokens"] for r in rows) == sum(a["total"] for a in answers)
    assert sum(r["prompt_tokens"] for r in rows) == sum(a["prompt"] for a in answers)
    for row in rows:
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        assert row["model"] == "smollm2"

    # A key sees its own rows only; another account sees none of these.
    mine = usage_rows(client, ai_key)
    assert len({r["key_id"] for r in mine}) == 1 and sum(r["requests"] for r in mine) == 2
    assert sum(r["total_tokens"] for r in mine) == answers[0]["total"] + answers[1]["total"]
    stranger = signup(client, "eve@example.com")
    assert usage_rows(client, stranger) == []


def test_a_client_leaving_mid_stream_is_charged_for_what_was_generated(app, client, ai_key):
    from app import llm

    response = chat(client, ai_key, messages=LONG, stream=True, max_tokens=300)
    assert response.status_code == 200
    from tests.support.servers import SSEReader

    reader = SSEReader(response.response)
    seen = [reader.next_event() for _ in range(3)]
    assert [f["event"] for f in seen] == ["token"] * 3
    response.close()  # what the server does when the client hangs up

    rows = usage_rows(client, ai_key)
    assert sum(r["requests"] for r in rows) == 1
    completion = sum(r["completion_tokens"] for r in rows)
    assert 1 <= completion < 300  # counted for the text produced, not the budget asked for
    assert sum(r["prompt_tokens"] for r in rows) > 0
    with app.app_context():  # and the provider is free again (no request left in flight)
        assert llm.status()["providers"][0]["active_requests"] == 0


def test_provider_dying_mid_stream_ends_with_an_error_event(client, ai_key, llm_upstream):
    from tests.support.servers import SSEReader

    response = chat(client, ai_key, messages=LONG, stream=True, max_tokens=400)
    assert response.status_code == 200
    reader = SSEReader(response.response)
    assert reader.next_event()["event"] == "token"
    try:
        kill(llm_upstream)
        rest = []
        while (frame := reader.next_event()) is not None:
            rest.append(frame)
        response.close()
    finally:
        llm_upstream.start()
    assert rest[-1]["event"] == "error", rest[-3:]
    assert rest[-1]["data"]["code"] == "LLM_UPSTREAM_ERROR"
    assert set(rest[-1]["data"]) == {"code", "message"}
    assert all(f["event"] == "token" for f in rest[:-1])
    rows = usage_rows(client, ai_key)  # what was produced before the failure is booked
    assert sum(r["requests"] for r in rows) == 1
    assert sum(r["completion_tokens"] for r in rows) >= 1


def test_status_lists_the_provider(client, ai_key, llm_upstream):
    assert chat(client, ai_key).status_code == 200  # gives it a latency
    data = client.get("/v1/ai/status", headers=bearer(ai_key)).get_json()["data"]
    assert data["enabled"] is True
    assert data["strategy"] == "priority"
    (provider,) = data["providers"]
    assert provider["name"] == llm_upstream.name
    assert provider["kind"] == "openai"
    assert provider["available"] is True
    assert provider["models"] == [llm_upstream.model]
    assert provider["active_requests"] == 0
    assert provider["avg_latency_ms"] > 0
    assert provider["cooldown_until"] is None


def test_attempts_header_shows_failover_and_failure(make_app, llm_upstream):
    from tests.support.llm_server import llm_providers
    from tests.support.servers import free_port

    down = {"name": "down", "type": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key": "",
            "models": [llm_upstream.model], "priority": 0, "timeout": 5}
    app = make_app(**with_model(llm_upstream, LLM_PROVIDERS=[down, *llm_providers(llm_upstream)]))
    client = app.test_client()
    key = create_key(client, signup(client, "failover@example.com"), scopes=["ai:use"])["key"]

    response = chat(client, key)
    assert response.status_code == 200
    assert response.headers["X-LLM-Provider"] == llm_upstream.name
    tried = response.headers["X-LLM-Attempts"].split(", ")
    assert tried[0].startswith("down;outcome=error") and tried[-1].startswith(f"{llm_upstream.name};outcome=ok")

    only_down = make_app(**with_model(llm_upstream, LLM_PROVIDERS=[down], LLM_RETRIES=0))
    client = only_down.test_client()
    key = create_key(client, signup(client, "down@example.com"), scopes=["ai:use"])["key"]
    response = chat(client, key)
    error_of(response, 502, "LLM_UPSTREAM_ERROR")
    assert response.headers["X-LLM-Attempts"].startswith("down;outcome=error")
    assert "X-LLM-Provider" not in response.headers
    response = client.post("/v1/chat/completions", headers=bearer(key),
                           json={"model": llm_upstream.model, "messages": HELLO, "max_tokens": 4})
    assert response.status_code == 502
    assert response.get_json()["error"]["type"] == "server_error"
    assert response.get_json()["error"]["code"] == "upstream_error"
    assert response.headers["X-LLM-Attempts"].startswith("down;outcome=error")
