"""Who may use the gateway, what it refuses, and how: envelope errors on /v1/ai, OpenAI errors on the
compatible routes. None of these needs a model: with no provider, chats answer 503 LLM_UNAVAILABLE."""
from __future__ import annotations

import pytest

from tests.plugins.ai.conftest import openai_error_of
from tests.support.identity import bearer, create_key, error_of, signup

pytestmark = pytest.mark.db

HELLO = [{"role": "user", "content": "Hello"}]
COMPLETION = {"model": "smollm2", "messages": HELLO}


def chat(client, credential, **body):
    body.setdefault("messages", HELLO)
    return client.post("/v1/ai/chat", json=body, headers=bearer(credential) if credential else {})


def completions(client, credential, **body):
    body = {**COMPLETION, **body}
    return client.post("/v1/chat/completions", json=body, headers=bearer(credential) if credential else {})


# --------------------------------------------------------------------------- no provider


def test_no_provider_chat_is_503_with_a_hint(client, owner, ai_key):
    for credential in (owner, ai_key):
        error = error_of(chat(client, credential), 503, "LLM_UNAVAILABLE")
        assert "LLM_PROVIDERS" in error["message"]  # says how to configure one
        assert error_of(chat(client, credential, stream=True), 503, "LLM_UNAVAILABLE")


def test_no_provider_on_the_openai_routes_is_an_openai_503(client, ai_key):
    error = openai_error_of(completions(client, ai_key), 503, code="llm_unavailable")
    assert error["type"] == "server_error"
    assert "LLM_PROVIDERS" in error["message"]
    openai_error_of(completions(client, ai_key, stream=True), 503, code="llm_unavailable")
    models = client.get("/v1/models", headers=bearer(ai_key))
    assert models.status_code == 200
    assert models.get_json() == {"object": "list", "data": []}


def test_status_says_disabled(client, owner):
    response = client.get("/v1/ai/status", headers=bearer(owner))
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["enabled"] is False
    assert data["providers"] == []
    assert isinstance(data["strategy"], str)


# --------------------------------------------------------------------------- authentication and scopes


def test_anonymous_callers_are_refused(client):
    error_of(chat(client, None), 401, "UNAUTHORIZED")
    error_of(client.get("/v1/ai/status"), 401, "UNAUTHORIZED")
    error_of(client.get("/v1/ai/usage"), 401, "UNAUTHORIZED")
    response = completions(client, None)
    error = openai_error_of(response, 401, code="invalid_api_key")
    assert error["type"] == "invalid_request_error"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    openai_error_of(client.get("/v1/models"), 401, code="invalid_api_key")


def test_a_bad_key_is_an_openai_401(client):
    bogus = "lnos_live_" + "A" * 49
    openai_error_of(completions(client, bogus), 401, code="invalid_api_key")
    openai_error_of(client.get("/v1/models", headers=bearer(bogus)), 401, code="invalid_api_key")
    error_of(chat(client, bogus), 401)


def test_revoked_key_is_refused_on_both_apis(client, owner):
    made = create_key(client, owner, scopes=["ai:use"])
    assert client.delete(f"/v1/api-keys/{made['id']}", headers=bearer(owner)).status_code == 204
    error_of(chat(client, made["key"]), 401, "KEY_REVOKED")
    error = openai_error_of(completions(client, made["key"]), 401, code="invalid_api_key")
    assert "revoked" in error["message"].lower()


def test_a_key_without_ai_use_is_403(client, owner):
    other = create_key(client, owner, scopes=["keys:read"])["key"]
    error = error_of(chat(client, other), 403, "INSUFFICIENT_SCOPE")
    assert error["details"]["required_scope"] == "ai:use"
    error_of(client.get("/v1/ai/usage", headers=bearer(other)), 403, "INSUFFICIENT_SCOPE")
    error = openai_error_of(completions(client, other), 403, code="insufficient_scope")
    assert "ai:use" in error["message"]
    openai_error_of(client.get("/v1/models", headers=bearer(other)), 403, code="insufficient_scope")
    # The status is for any authenticated caller.
    assert client.get("/v1/ai/status", headers=bearer(other)).status_code == 200


def test_sessions_carry_ai_use(client, owner):
    # A signed-in user's session token works on the OpenAI routes too (as the SDK's api_key).
    assert client.get("/v1/models", headers=bearer(owner)).status_code == 200


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("body, field", [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages.0.content"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "x" * 200_001}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "hi"}] * 501}, "messages"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stream": "sometimes"}, "stream"),
    ({"model": ""}, "model"),
])
def test_chat_validation_errors_name_the_field(client, ai_key, body, field):
    error = error_of(chat(client, ai_key, **body), 422, "VALIDATION_ERROR")
    assert field in error["details"]["fields"], error


def test_chat_total_size_is_capped(client, ai_key):
    messages = [{"role": "user", "content": "x" * 150_000}] * 7
    error = error_of(chat(client, ai_key, messages=messages), 422, "VALIDATION_ERROR")
    assert "messages" in error["details"]["fields"]


def test_malformed_json(client, ai_key):
    response = client.post("/v1/ai/chat", data="{not json", content_type="application/json", headers=bearer(ai_key))
    error_of(response, 400, "INVALID_REQUEST")
    response = client.post("/v1/chat/completions", data="{not json", content_type="application/json",
                           headers=bearer(ai_key))
    assert openai_error_of(response, 400)["type"] == "invalid_request_error"


@pytest.mark.parametrize("body, param", [
    ({"model": None}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
    ({"n": 2}, "n"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_openai_validation_errors_are_400_with_param(client, ai_key, body, param):
    payload = {**COMPLETION, **body}
    if payload.get("model") is None:
        del payload["model"]
    response = client.post("/v1/chat/completions", json=payload, headers=bearer(ai_key))
    error = openai_error_of(response, 400, param=param)
    assert error["type"] == "invalid_request_error"


def test_openai_accepts_parameters_it_does_not_use(client, ai_key):
    # Well-formed OpenAI requests pass validation (and then meet the missing provider).
    body = {**COMPLETION, "messages": [{"role": "developer", "content": "Be brief."},
                                       {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                                       {"role": "assistant", "content": None},
                                       {"role": "user", "content": "again", "name": "ada"}],
            "n": 1, "stop": "\n", "seed": 7, "user": "end-user-1", "max_completion_tokens": 5,
            "presence_penalty": 0.5, "frequency_penalty": 0, "logit_bias": {"50256": -100},
            "response_format": {"type": "text"}, "parallel_tool_calls": False, "store": False}
    openai_error_of(completions(client, ai_key, **body), 503, code="llm_unavailable")


# --------------------------------------------------------------------------- rate limits


def _set_tier(app, user_id, tier):
    from plugins.auth import service

    with app.app_context():
        service.set_tier(user_id, tier)


def test_free_tier_ai_limit_on_top_of_the_tier_limit(make_app):
    from tests.plugins.ai.conftest import NO_PROVIDER

    app = make_app(RATELIMIT_AI_FREE="3/hour", **NO_PROVIDER)
    client = app.test_client()
    owner = signup(client, "free@example.com")
    key = create_key(client, owner, scopes=["ai:use"], rate_limit="1000/minute")["key"]
    # Three chats (each 503: there is no provider, but they count), through either API and by the
    # key or the account's own session: the AI budget is the account's.
    error_of(chat(client, key), 503)
    openai_error_of(completions(client, key), 503)
    response = chat(client, owner)
    assert response.status_code == 503
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    # The fourth chat is over the AI budget, although the key's own limit is far away, and a new
    # key of the same account does not buy more of it.
    error = error_of(chat(client, key), 429, "RATE_LIMIT_EXCEEDED")
    other = create_key(client, owner, scopes=["ai:use"], rate_limit="1000/minute")["key"]
    error_of(chat(client, other), 429, "RATE_LIMIT_EXCEEDED")
    assert error["details"]["group"] == "ai"
    assert error["details"]["retry_after"] >= 1
    response = completions(client, key)
    error = openai_error_of(response, 429, code="rate_limit_exceeded")
    assert error["type"] == "requests"
    assert int(response.headers["Retry-After"]) >= 1
    # Routes outside the chat group are not charged.
    assert client.get("/v1/models", headers=bearer(key)).status_code == 200
    assert client.get("/v1/ai/status", headers=bearer(key)).status_code == 200


def test_paid_tiers_have_no_ai_limit(make_app):
    from tests.plugins.ai.conftest import NO_PROVIDER

    app = make_app(RATELIMIT_AI_FREE="2/hour", **NO_PROVIDER)
    client = app.test_client()
    owner = signup(client, "pro@example.com")
    _set_tier(app, owner["user"]["id"], "pro")
    key = create_key(client, owner, scopes=["ai:use"])["key"]
    for _ in range(4):
        error_of(chat(client, key), 503)


def test_ai_limit_can_be_turned_off(make_app):
    from tests.plugins.ai.conftest import NO_PROVIDER

    app = make_app(RATELIMIT_AI_FREE="", **NO_PROVIDER)
    client = app.test_client()
    key = create_key(client, signup(client, "open@example.com"), scopes=["ai:use"])["key"]
    for _ in range(4):
        error_of(chat(client, key), 503)


def test_a_malformed_ai_limit_stops_start_up(make_app):
    from app.config import ConfigError

    with pytest.raises(Exception) as raised:
        make_app(RATELIMIT_AI_FREE="lots per hour")
    assert "RATELIMIT_AI_FREE" in str(raised.value)
    assert isinstance(raised.value, ConfigError) or "ConfigError" in str(raised.value)


# --------------------------------------------------------------------------- the spec


def test_every_route_is_in_the_openapi_spec(client):
    spec = client.get("/openapi.json").get_json()
    paths = spec["paths"]
    for path, method in (("/v1/ai/status", "get"), ("/v1/ai/chat", "post"), ("/v1/ai/usage", "get"),
                         ("/v1/chat/completions", "post"), ("/v1/models", "get"), ("/v1/models/{model_id}", "get")):
        assert method in paths[path], path
    chat_op = paths["/v1/ai/chat"]["post"]
    assert chat_op["x-required-scopes"] == ["ai:use"]
    assert set(chat_op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    completion_op = paths["/v1/chat/completions"]["post"]
    assert completion_op["x-required-scopes"] == ["ai:use"]
    assert set(completion_op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    # Plain OpenAI objects, not the envelope; errors in OpenAI's shape, 400 not 422.
    ok = completion_op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/ChatCompletion")
    assert "422" not in completion_op["responses"]
    for status in ("400", "401", "403", "404", "429", "503"):
        schema = completion_op["responses"][status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/OpenAIError"), status
    models_ok = paths["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert models_ok["$ref"].endswith("/ModelList")
