"""The router against two real OpenAI-compatible upstreams (llama.cpp's server over SmolLM2).

Strategy choice, failover when an upstream is stopped mid-test, cool-down and
probe-back after a restart, stream failover before the first token. The
model's words are never asserted (temperature 0, a few tokens): structure,
which provider answered, and the attempts are.
"""
from __future__ import annotations

import json

import pytest

from app import llm
from tests.support.llm_server import llm_providers
from tests.support.servers import wait_until

pytestmark = [pytest.mark.xdist_group("llm"), pytest.mark.slow]


def ask(text: str = "Say hello.", max_tokens: int = 6) -> llm.ChatRequest:
    return llm.ChatRequest(messages=[llm.Message("system", "You are terse."), llm.Message("user", text)],
                           temperature=0, max_tokens=max_tokens, seed=7)


def outcomes(attempts: list[llm.Attempt]) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in attempts]


def provider_status(name: str) -> dict:
    return next(p for p in llm.status()["providers"] if p["name"] == name)


def test_chat_answers_with_usage_and_attempts(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second))
    with app.app_context():
        result = llm.chat(ask())
        assert result.provider == first.name and result.model
        assert isinstance(result.content, str) and result.content.strip()
        assert result.finish_reason in ("stop", "length")
        assert result.usage.prompt_tokens > 5 and 1 <= result.usage.completion_tokens <= 6
        assert not result.usage.estimated
        assert outcomes(result.attempts) == [(first.name, "ok")] and result.latency_ms > 0
        assert llm.attempts_header(result.attempts).startswith(f"{first.name};outcome=ok;dur=")
        status = provider_status(first.name)
        assert status["avg_latency_ms"] > 0 and status["active_requests"] == 0
        assert {"id": "smollm2", "provider": first.name, "owned_by": first.name} in llm.models()
        assert llm.context_window("smollm2") == 2048


def test_stream_yields_deltas_then_usage(make_app, llm_upstream):
    app = make_app(LLM_PROVIDERS=llm_providers(llm_upstream))
    with app.app_context():
        stream = llm.stream(ask(max_tokens=8))
        assert stream.provider == llm_upstream.name and stream.model == "smollm2"
        assert provider_status(llm_upstream.name)["active_requests"] == 1
        chunks = list(stream)
        assert provider_status(llm_upstream.name)["active_requests"] == 0
    *deltas, final = chunks
    assert deltas and all(c.delta and c.finish_reason is None for c in deltas)
    assert final.delta == "" and final.finish_reason in ("stop", "length") and final.usage is not None
    assert 1 <= final.usage.completion_tokens <= 8 and final.usage.prompt_tokens > 5
    assert stream.usage == final.usage and stream.finish_reason == final.finish_reason


def test_stream_close_releases_the_provider(make_app, llm_upstream):
    app = make_app(LLM_PROVIDERS=llm_providers(llm_upstream))
    with app.app_context():
        stream = llm.stream(ask(max_tokens=64))
        next(stream)
        stream.close()
        assert provider_status(llm_upstream.name)["active_requests"] == 0
        assert list(stream) == []


def test_priority_fails_over_when_the_first_is_stopped(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second), LLM_FAILURE_THRESHOLD=5)
    with app.app_context():
        assert llm.chat(ask()).provider == first.name
        with first.stopped():
            result = llm.chat(ask())
            assert result.provider == second.name
            assert outcomes(result.attempts) == [(first.name, "error"), (second.name, "ok")]
            assert result.attempts[0].error.startswith("connection failed")
            header = llm.attempts_header(result.attempts)
            assert header.startswith(f'{first.name};outcome=error;') and f"{second.name};outcome=ok" in header
        assert llm.chat(ask()).provider == first.name  # back once it runs again (breaker never opened)


def test_stream_fails_over_before_the_first_token(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second))
    with app.app_context(), first.stopped():
        stream = llm.stream(ask())
        assert stream.provider == second.name
        assert outcomes(stream.attempts) == [(first.name, "error"), (second.name, "ok")]
        text = "".join(chunk.delta for chunk in stream)
        assert text.strip() and stream.usage.completion_tokens >= 1


def test_cooldown_then_one_probe_brings_it_back(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second), LLM_FAILURE_THRESHOLD=1, LLM_COOLDOWN_SECONDS=4)
    with app.app_context():
        with first.stopped():
            assert llm.chat(ask()).provider == second.name  # first failure opens the breaker
            cooling = provider_status(first.name)
            assert cooling["available"] is False and cooling["cooldown_until"]
            skipped = llm.chat(ask())
            assert outcomes(skipped.attempts) == [(first.name, "skipped"), (second.name, "ok")]
        # Running again; once the cool-down is over the next request is the probe.
        wait_until(lambda: provider_status(first.name)["available"], timeout=30, message="cool-down end")
        probe = llm.chat(ask())
        assert outcomes(probe.attempts) == [(first.name, "ok")]
        assert llm.chat(ask()).provider == first.name


def test_round_robin_alternates(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second), LLM_STRATEGY="round_robin")
    with app.app_context():
        order = [llm.chat(ask(max_tokens=2)).provider for _ in range(4)]
    assert set(order) == {first.name, second.name}
    assert order[0] != order[1] and order[0] == order[2] and order[1] == order[3]


def test_least_loaded_avoids_the_busy_provider(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second), LLM_STRATEGY="least_loaded")
    with app.app_context():
        for _ in range(2):  # whichever a tie picks, the other one is chosen while it is busy
            busy = llm.stream(ask(max_tokens=32))
            try:
                other = llm.chat(ask(max_tokens=2))
                assert other.provider != busy.provider
                assert provider_status(busy.provider)["active_requests"] == 1
            finally:
                busy.close()
        assert [p["active_requests"] for p in llm.status()["providers"]] == [0, 0]


def test_fastest_measures_each_then_prefers_the_lower_latency(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second), LLM_STRATEGY="fastest")
    with app.app_context():
        measured = {llm.chat(ask(max_tokens=2)).provider for _ in range(2)}
        assert measured == {first.name, second.name}  # a provider never measured is tried first
        names = [first.name, second.name]
        for _ in range(2):
            # The router's own figures: status() rounds to 0.1 ms, which can tie two close averages.
            latency = llm.router().state.latency(names)
            assert llm.chat(ask(max_tokens=2)).provider == min(latency, key=latency.get)
        # A provider that turns slow loses the traffic.
        llm.router().state.record_latency(first.name, 60_000)
        llm.router().state.record_latency(first.name, 60_000)
        assert llm.chat(ask(max_tokens=2)).provider == second.name


def test_a_request_too_long_for_the_model_is_refused_without_failover(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second))
    with app.app_context():
        with pytest.raises(llm.LLMRequestRejected) as info:
            llm.chat(ask("word " * 5000))
        assert info.value.status == 400 and info.value.details["provider"] == first.name
        assert [a["provider"] for a in info.value.details["attempts"]] == [first.name]
        assert provider_status(first.name)["available"]


def test_health_reports_the_providers(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second), LLM_FAILURE_THRESHOLD=1, LLM_COOLDOWN_SECONDS=60,
                   LLM_RETRIES=0)
    client = app.test_client()
    assert client.get("/health").get_json()["services"]["llm"] == "ok: 2/2 provider(s) available"
    with first.stopped(), app.app_context():
        llm.chat(ask(max_tokens=2))
    assert client.get("/health").get_json()["services"]["llm"] == "ok: 1/2 provider(s) available"


def test_cli_status_check_and_usage(make_app, llm_upstreams):
    first, second = llm_upstreams
    app = make_app(LLM_PROVIDERS=llm_providers(first, second))
    runner = app.test_cli_runner()
    table = runner.invoke(args=["llm", "status"])
    assert table.exit_code == 0 and first.name in table.output and "strategy: priority" in table.output
    assert json.loads(runner.invoke(args=["llm", "status", "--json"]).output)["enabled"] is True
    checked = runner.invoke(args=["llm", "check"])
    assert checked.exit_code == 0 and f"{first.name}: ok" in checked.output
    with first.stopped():
        failed = runner.invoke(args=["llm", "check"])
        assert failed.exit_code == 1
        assert f"{first.name}: down" in failed.output and f"{second.name}: ok" in failed.output
    with app.app_context():
        llm.record_usage(user_id="usr_cli", key_id=None, provider=first.name, model="smollm2", usage=llm.Usage(3, 2))
    usage = json.loads(runner.invoke(args=["llm", "usage", "usr_cli"]).output)
    assert [(u["requests"], u["total_tokens"]) for u in usage] == [(1, 5)]


def test_a_provider_without_a_model_list_serves_what_its_server_lists(make_app, llm_upstream):
    [entry] = llm_providers(llm_upstream)
    entry.pop("models")
    app = make_app(LLM_PROVIDERS=[entry])
    with app.app_context():
        assert [(m["id"], m["provider"]) for m in llm.models()] == [(llm_upstream.model, llm_upstream.name)]
        result = llm.chat(ask())  # no model named: the first one the server lists
        assert result.provider == llm_upstream.name and result.content.strip()
