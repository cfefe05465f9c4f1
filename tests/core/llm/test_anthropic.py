"""The `anthropic` provider against a local server speaking the Messages API wire format."""
from __future__ import annotations

import pytest

from app import llm
from app.llm.providers.anthropic import OPENING_TURN, wire_messages

from .anthropic_fake import API_KEY, fake_anthropic


@pytest.fixture
def fake():
    with fake_anthropic() as server:
        yield server


def entry(fake, **fields):
    return {"name": "claude", "type": "anthropic", "base_url": fake.url + "/v1", "api_key": API_KEY,
            "models": ["claude-test"], **fields}


def conversation():
    return [llm.Message("system", "Be brief."), llm.Message("user", "Hi"), llm.Message("user", "there"),
            llm.Message("assistant", "Hello!"), llm.Message("system", "Answer in English."),
            llm.Message("tool", "42"), llm.Message("user", "what now")]


def test_mapping_of_roles_and_system_prompt():
    system, turns = wire_messages(conversation())
    assert system == "Be brief.\n\nAnswer in English."
    assert turns == [{"role": "user", "content": "Hi\n\nthere"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "Tool output:\n42\n\nwhat now"}]
    _, opened = wire_messages([llm.Message("assistant", "Welcome"), llm.Message("user", "thanks")])
    assert opened[0] == {"role": "user", "content": OPENING_TURN} and opened[1]["role"] == "assistant"


def test_chat(make_app, fake):
    app = make_app(LLM_PROVIDERS=[entry(fake)])
    with app.app_context():
        result = llm.chat(llm.ChatRequest(messages=conversation(), temperature=1.5, stop=["END"], user="usr_1"))
    assert result.content == "You said: Tool output: 42 what now"
    assert (result.provider, result.model, result.finish_reason) == ("claude", "claude-test", "stop")
    assert result.usage == llm.Usage(prompt_tokens=13, completion_tokens=7)
    sent = fake.received[-1]
    assert sent["system"] == "Be brief.\n\nAnswer in English."
    assert sent["max_tokens"] == 4096 and sent["temperature"] == 1.0  # required; capped to the API's range
    assert sent["stop_sequences"] == ["END"] and sent["metadata"] == {"user_id": "usr_1"}
    assert "stream" not in sent or sent["stream"] is False
    headers = {k.lower(): v for k, v in fake.headers[-1].items()}
    assert API_KEY in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert headers["anthropic-version"]


def test_length_limit_maps_to_length(make_app, fake):
    app = make_app(LLM_PROVIDERS=[entry(fake, max_tokens=3)])
    with app.app_context():
        result = llm.chat(llm.ChatRequest(messages=[llm.Message("user", "one two three four")]))
    assert result.finish_reason == "length" and result.usage.completion_tokens == 3
    assert fake.received[-1]["max_tokens"] == 3


def test_stream_deltas_and_usage_from_events(make_app, fake):
    app = make_app(LLM_PROVIDERS=[entry(fake)])
    with app.app_context():
        stream = llm.stream(llm.ChatRequest(messages=[llm.Message("user", "good morning")], max_tokens=50))
        chunks = list(stream)
    assert [c.delta for c in chunks[:-1]] == ["You", " said:", " good", " morning"]
    final = chunks[-1]
    assert final.delta == "" and final.finish_reason == "stop"
    assert final.usage == llm.Usage(prompt_tokens=2, completion_tokens=4, estimated=False)
    assert stream.usage == final.usage and stream.provider == "claude" and stream.model == "claude-test"
    assert fake.received[-1]["stream"] is True


def test_overloaded_fails_over_and_counts_toward_the_breaker(make_app, fake, echo_kind):
    fake.fail_with = 529
    app = make_app(LLM_PROVIDERS=[entry(fake, priority=1), {"name": "backup", "type": "echo", "priority": 2}],
                   LLM_FAILURE_THRESHOLD=1, LLM_COOLDOWN_SECONDS=300)
    with app.app_context():
        result = llm.chat(llm.ChatRequest(messages=[llm.Message("user", "hi")]))
        assert result.provider == "backup"
        assert [(a.provider, a.outcome, a.error) for a in result.attempts] == [
            ("claude", "error", "HTTP 529"), ("backup", "ok", None)]
        assert llm.status()["providers"][0]["available"] is False


def test_invalid_request_goes_to_the_caller(make_app, fake):
    app = make_app(LLM_PROVIDERS=[entry(fake)])
    with app.app_context():
        with pytest.raises(llm.LLMRequestRejected) as info:
            llm.chat(llm.ChatRequest(messages=[llm.Message("user", "hi")], max_tokens=100_000))
    assert info.value.details["upstream_status"] == 400
    assert "maximum allowed" in info.value.message


def test_wrong_key_fails_over_as_a_provider_problem(make_app, fake):
    app = make_app(LLM_PROVIDERS=[entry(fake, api_key="sk-ant-wrong")], LLM_RETRIES=0)
    with app.app_context():
        with pytest.raises(llm.LLMUpstreamError) as info:
            llm.chat(llm.ChatRequest(messages=[llm.Message("user", "hi")]))
    assert info.value.details["attempts"][0]["error"] == "HTTP 401"
    assert "sk-ant-wrong" not in str(info.value.details)


def test_failure_after_the_first_delta_raises_from_next(make_app, fake):
    fake.break_stream = True
    app = make_app(LLM_PROVIDERS=[entry(fake)])
    with app.app_context():
        stream = llm.stream(llm.ChatRequest(messages=[llm.Message("user", "hello")]))
        assert next(stream).delta == "You"
        with pytest.raises(llm.ProviderError) as info:
            next(stream)
        assert info.value.provider == "claude"
        assert llm.status()["providers"][0]["active_requests"] == 0
