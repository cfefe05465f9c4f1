"""LLM settings: what start-up accepts, what it refuses (naming the variable and the entry), implicit defaults."""
from __future__ import annotations

import json

import pytest

from app import llm
from app.config import ConfigError
from app.errors import ValidationFailed


def refused(make_app, **config) -> str:
    with pytest.raises(ConfigError) as info:
        make_app(**config)
    return str(info.value)


def local(name="local", **fields):
    return {"name": name, "type": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["m"], **fields}


def test_valid_entries_become_providers_ordered_by_priority(make_app):
    app = make_app(LLM_PROVIDERS=[local("second", priority=2), local("first", priority=1, timeout=5,
                                                                       context_window=8192)],
                   LLM_STRATEGY="round_robin")
    with app.app_context():
        status = llm.status()
        assert status["enabled"] is True and llm.available()
        assert status["strategy"] == "round_robin"
        assert [p["name"] for p in status["providers"]] == ["first", "second"]
        first = status["providers"][0]
        assert first == {"name": "first", "kind": "openai", "available": True, "models": ["m"],
                         "active_requests": 0, "avg_latency_ms": None, "cooldown_until": None}
        assert llm.models() == [{"id": "m", "provider": "first", "owned_by": "first"},
                                {"id": "m", "provider": "second", "owned_by": "second"}]
        assert llm.context_window("m") == 8192  # the serving provider's own setting


def test_the_environment_variable_is_json(make_app, monkeypatch):
    monkeypatch.setenv("LUNAOS_LLM_PROVIDERS", json.dumps([local("fromenv")]))
    monkeypatch.setenv("LUNAOS_LLM_STRATEGY", "fastest")
    app = make_app()
    with app.app_context():
        assert [p["name"] for p in llm.status()["providers"]] == ["fromenv"]
        assert llm.status()["strategy"] == "fastest"


def test_malformed_json_names_the_variable(make_app, monkeypatch):
    monkeypatch.setenv("LUNAOS_LLM_PROVIDERS", '[{"name": "x", "type": "openai",')
    message = refused(make_app)
    assert "LUNAOS_LLM_PROVIDERS: not valid JSON" in message


@pytest.mark.parametrize(("entry", "expected"), [
    ({"type": "openai", "base_url": "http://h/v1"}, "LUNAOS_LLM_PROVIDERS[0]: 'name' is required"),
    ({"name": "x"}, "LUNAOS_LLM_PROVIDERS[0] 'x': 'type' is required"),
    ({"name": "x", "type": "nosuchkind"},
     "unknown provider type 'nosuchkind'; known types: anthropic, llamacpp, openai"),
    (local(base_url="ftp://h"), "'base_url' must be an http(s) URL"),
    (local(models="m"), "'models' must be a list of model names"),
    (local(priority="high"), "'priority' must be an integer"),
    (local(timeout=0), "'timeout' must be a number of seconds > 0"),
    (local(context_window=10), "'context_window' must be an integer >= 256"),
    (local(api_key=123), "'api_key' must be a string"),
    (local(temprature=1), "unknown key(s) 'temprature' for type 'openai'"),
    ("lmstudio", "LUNAOS_LLM_PROVIDERS[0]: expected an object"),
])
def test_a_bad_entry_is_refused_naming_the_entry(make_app, entry, expected):
    assert expected in refused(make_app, LLM_PROVIDERS=[entry])


def test_every_problem_is_reported_at_once(make_app):
    message = refused(make_app, LLM_PROVIDERS=[local("a"), local("a", priority=None, timeout=-1), {"name": "b"}])
    assert "LUNAOS_LLM_PROVIDERS[1] 'a': the name 'a' is used by an earlier entry" in message
    assert "LUNAOS_LLM_PROVIDERS[1] 'a': 'timeout' must be" in message
    assert "LUNAOS_LLM_PROVIDERS[2] 'b': 'type' is required" in message


def test_not_a_list(make_app):
    assert "LUNAOS_LLM_PROVIDERS: expected a JSON list of provider objects, got int" in refused(
        make_app, LLM_PROVIDERS=5)


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("LLM_STRATEGY", "fastest-first", "LUNAOS_LLM_STRATEGY: must be one of priority, round_robin, least_loaded, "
                                      "fastest"),
    ("LLM_RETRIES", -1, "LUNAOS_LLM_RETRIES: must be an integer >= 0"),
    ("LLM_FAILURE_THRESHOLD", 0, "LUNAOS_LLM_FAILURE_THRESHOLD: must be an integer >= 1"),
    ("LLM_COOLDOWN_SECONDS", -5, "LUNAOS_LLM_COOLDOWN_SECONDS: must be a number >= 0"),
    ("LLM_TIMEOUT", 0, "LUNAOS_LLM_TIMEOUT: must be a number > 0"),
])
def test_bad_router_settings(make_app, setting, value, expected):
    assert expected in refused(make_app, **{setting: value})


def test_openai_without_a_key_or_base_url_is_refused(make_app):
    message = refused(make_app, LLM_PROVIDERS=[{"name": "cloud", "type": "openai", "models": ["gpt-4o"]}])
    assert "'cloud'" in message and "LUNAOS_OPENAI_API_KEY" in message


def test_anthropic_without_a_key_is_refused(make_app):
    message = refused(make_app, LLM_PROVIDERS=[{"name": "claude", "type": "anthropic", "models": ["claude-x"]}])
    assert "'claude'" in message and "LUNAOS_ANTHROPIC_API_KEY" in message


def test_vendor_keys_fill_in_the_entry(make_app):
    app = make_app(OPENAI_API_KEY="sk-test-not-real", LLM_PROVIDERS=[
        {"name": "cloud", "type": "openai", "models": ["gpt-4o"]}])
    with app.app_context():
        provider = llm.router().by_name["cloud"]
        assert provider.api_key == "sk-test-not-real"
        assert llm.context_window("gpt-4o") == 128_000  # a known model family
        assert "sk-test-not-real" not in json.dumps(llm.status())


def test_implicit_provider_from_openai_key(make_app):
    app = make_app(OPENAI_API_KEY="sk-test-not-real", LLM_OFFLINE=False)
    with app.app_context():
        [provider] = llm.status()["providers"]
        assert provider["name"] == "openai" and provider["kind"] == "openai"


def test_implicit_provider_from_anthropic_key(make_app):
    app = make_app(ANTHROPIC_API_KEY="sk-ant-test", LLM_OFFLINE=False)
    with app.app_context():
        [provider] = llm.status()["providers"]
        assert provider["kind"] == "anthropic"


def test_nothing_configured_means_unavailable(make_app):
    app = make_app(LLM_OFFLINE=False)
    client = app.test_client()
    with app.app_context():
        assert not llm.available()
        assert llm.status() == {"enabled": False, "strategy": "priority", "providers": []}
        assert llm.models() == []
        with pytest.raises(llm.LLMUnavailable) as info:
            llm.chat(llm.ChatRequest(messages=[llm.Message("user", "hi")]))
        assert info.value.status == 503 and info.value.code == "LLM_UNAVAILABLE"
        assert "LUNAOS_LLM_PROVIDERS" in info.value.message
        assert llm.context_window(None) == 4096 and llm.count_tokens("abcdefgh") == 2
    health = client.get("/health").get_json()
    assert health["services"]["llm"].startswith("not configured")
    assert health["status"] == "healthy"


def test_request_checks(make_app):
    app = make_app(LLM_PROVIDERS=[local()])
    with app.app_context():
        for request, field in [
            (llm.ChatRequest(messages=[]), "messages"),
            (llm.ChatRequest(messages=[llm.Message("robot", "hi")]), "messages.0"),
            (llm.ChatRequest(messages=[llm.Message("user", "hi")], temperature=3), "temperature"),
            (llm.ChatRequest(messages=[llm.Message("user", "hi")], max_tokens=0), "max_tokens"),
        ]:
            with pytest.raises(ValidationFailed) as info:
                llm.chat(request)
            assert field in info.value.details["fields"]


def test_unknown_provider_name_and_model(make_app):
    app = make_app(LLM_PROVIDERS=[local()])
    request = llm.ChatRequest(messages=[llm.Message("user", "hi")])
    with app.app_context():
        with pytest.raises(ValidationFailed) as info:
            llm.chat(request, provider="nope")
        assert info.value.status == 422 and "provider" in info.value.details["fields"]
        with pytest.raises(llm.ModelNotFound) as missing:
            llm.stream(llm.ChatRequest(messages=[llm.Message("user", "hi")], model="other"))
        assert missing.value.details["models"] == ["m"]


def test_attempts_header_format():
    header = llm.attempts_header([llm.Attempt("a", "error", 12.345, 'HTTP 503 "x"\n'),
                                  llm.Attempt("b", "ok", 40.0)])
    assert header == 'a;outcome=error;dur=12.3;error="HTTP 503 x", b;outcome=ok;dur=40.0'
