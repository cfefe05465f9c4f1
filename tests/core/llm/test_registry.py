"""Third-party provider kinds: registered in code, or shipped as `lunaos.llm_providers` entry points."""
from __future__ import annotations

import textwrap
import pytest

from app import llm
from app.config import ConfigError
from app.llm import registry

from .echo import EchoProvider


def ask(text: str = "hello", **fields) -> llm.ChatRequest:
    return llm.ChatRequest(messages=[llm.Message("user", text)], temperature=0, **fields)


def test_a_kind_registered_in_code_serves_chat_and_stream(make_app, echo_kind):
    app = make_app(LLM_PROVIDERS=[{"name": "mine", "type": "echo", "models": ["echo-1"]}])
    with app.app_context():
        result = llm.chat(ask("abc"))
        assert (result.content, result.provider, result.model) == ("cba", "mine", "echo-1")
        assert [a.outcome for a in result.attempts] == ["ok"]
        stream = llm.stream(ask("xyz"))
        chunks = list(stream)
        assert "".join(c.delta for c in chunks) == "zyx"
        assert chunks[-1].finish_reason == "stop" and stream.usage == llm.Usage(1, 3)
        assert llm.status()["providers"][0]["kind"] == "echo"


def test_registering_a_taken_name_is_refused(echo_kind):
    with pytest.raises(ValueError, match="already registered"):
        llm.register_kind("openai", EchoProvider)
    with pytest.raises(TypeError):
        llm.register_kind("bad", object)  # type: ignore[arg-type]


def test_retryable_failure_fails_over_and_breaker_opens(make_app, echo_kind):
    app = make_app(LLM_PROVIDERS=[{"name": "flaky", "type": "echo", "priority": 1, "fail_first": 99},
                                  {"name": "steady", "type": "echo", "priority": 2}],
                   LLM_FAILURE_THRESHOLD=2, LLM_COOLDOWN_SECONDS=300, LLM_RETRIES=0)
    with app.app_context():
        first = llm.chat(ask())
        assert first.provider == "steady"
        assert [(a.provider, a.outcome, a.error) for a in first.attempts] == [
            ("flaky", "error", "HTTP 503"), ("steady", "ok", None)]
        llm.chat(ask())  # second consecutive failure: flaky cools down
        flaky = llm.status()["providers"][0]
        assert flaky["available"] is False and flaky["cooldown_until"].endswith("Z")
        third = llm.chat(ask())
        assert [(a.provider, a.outcome) for a in third.attempts] == [("flaky", "skipped"), ("steady", "ok")]
        assert llm.router().by_name["flaky"].calls == 2  # not called while cooling down


def test_retries_make_another_pass_after_backoff(make_app, echo_kind):
    app = make_app(LLM_PROVIDERS=[{"name": "flaky", "type": "echo", "fail_first": 2}],
                   LLM_RETRIES=2, LLM_RETRY_BACKOFF_SECONDS=0.01, LLM_FAILURE_THRESHOLD=5)
    with app.app_context():
        result = llm.chat(ask())
        assert [a.outcome for a in result.attempts] == ["error", "error", "ok"]


def test_when_every_provider_fails_the_caller_gets_502_with_the_attempts(make_app, echo_kind):
    app = make_app(LLM_PROVIDERS=[{"name": "down", "type": "echo", "fail_first": 99}],
                   LLM_RETRIES=1, LLM_RETRY_BACKOFF_SECONDS=0.01, LLM_FAILURE_THRESHOLD=10)
    with app.app_context():
        with pytest.raises(llm.LLMUpstreamError) as info:
            llm.chat(ask())
        assert info.value.status == 502
        assert [a["outcome"] for a in info.value.details["attempts"]] == ["error", "error"]


def test_all_cooling_down_is_503_with_retry_after(make_app, echo_kind):
    app = make_app(LLM_PROVIDERS=[{"name": "down", "type": "echo", "fail_first": 99}],
                   LLM_RETRIES=0, LLM_FAILURE_THRESHOLD=1, LLM_COOLDOWN_SECONDS=120)
    client = app.test_client()
    with app.app_context():
        with pytest.raises(llm.LLMUpstreamError):
            llm.chat(ask())
        with pytest.raises(llm.LLMUnavailable) as info:
            llm.stream(ask())
        assert 1 <= info.value.details["retry_after"] <= 121
        assert info.value.headers["Retry-After"] == str(info.value.details["retry_after"])
    health = client.get("/health").get_json()
    assert health["services"]["llm"].startswith("degraded")


def test_non_retryable_errors_go_to_the_caller_without_failover(make_app, echo_kind):
    app = make_app(LLM_PROVIDERS=[{"name": "strict", "type": "echo", "reject": True, "priority": 1},
                                  {"name": "other", "type": "echo", "priority": 2}],
                   LLM_FAILURE_THRESHOLD=1)
    with app.app_context():
        with pytest.raises(llm.LLMRequestRejected) as info:
            llm.chat(ask())
        assert info.value.status == 400 and info.value.code == "LLM_REQUEST_REJECTED"
        assert "prompt too long" in info.value.message
        assert llm.router().by_name["other"].calls == 0
        assert llm.status()["providers"][0]["available"]  # the request's fault: no cool-down


def test_a_stream_failing_before_its_first_chunk_fails_over(make_app, echo_kind):
    app = make_app(LLM_PROVIDERS=[{"name": "flaky", "type": "echo", "priority": 1, "fail_first": 1},
                                  {"name": "steady", "type": "echo", "priority": 2}])
    with app.app_context():
        stream = llm.stream(ask("ab"))
        assert stream.provider == "steady"
        assert [a.outcome for a in stream.attempts] == ["error", "ok"]
        assert "".join(c.delta for c in stream) == "ba"


# entry points

def _distribution(root, name: str, entry_points: str, module: str | None = None, source: str = "") -> None:
    dist = root / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    if module:
        (root / f"{module}.py").write_text(textwrap.dedent(source))


ECHO_MODULE = """
    from app import llm

    class Shout(llm.Provider):
        kind = "shout"

        def chat(self, request):
            text = request.messages[-1].content.upper()
            return llm.ChatResult(content=text, model="shout-1", provider=self.name, usage=llm.Usage(1, 1))

        def stream(self, request):
            yield llm.StreamChunk(delta=request.messages[-1].content.upper())
            yield llm.StreamChunk(finish_reason="stop", usage=llm.Usage(1, 1))
"""


def test_entry_point_kind_is_loaded_by_type(make_app, tmp_path, monkeypatch):
    _distribution(tmp_path, "lunaos_shout", f"""
        [{registry.ENTRY_POINT_GROUP}]
        shout = lunaos_shout_provider:Shout
    """, "lunaos_shout_provider", ECHO_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "shout" in llm.known_kinds()
        app = make_app(LLM_PROVIDERS=[{"name": "loud", "type": "shout"}])
        with app.app_context():
            assert llm.chat(ask("hi")).content == "HI"
    finally:
        llm.unregister_kind("shout")


def test_broken_entry_point_is_a_start_up_error_naming_it(make_app, tmp_path, monkeypatch):
    _distribution(tmp_path, "lunaos_broken", f"""
        [{registry.ENTRY_POINT_GROUP}]
        broken = lunaos_missing_module:Provider
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        make_app(LLM_PROVIDERS=[{"name": "b", "type": "broken"}])
    message = str(info.value)
    assert "LUNAOS_LLM_PROVIDERS[0] 'b'" in message
    assert ("entry point lunaos.llm_providers:broken = 'lunaos_missing_module:Provider' from lunaos_broken 1.0"
            in message)
    assert "ModuleNotFoundError" in message


def test_entry_point_that_is_not_a_provider_class(make_app, tmp_path, monkeypatch):
    _distribution(tmp_path, "lunaos_wrong", f"""
        [{registry.ENTRY_POINT_GROUP}]
        wrong = lunaos_wrong_provider:VALUE
    """, "lunaos_wrong_provider", "VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="not a subclass of app.llm.Provider"):
        make_app(LLM_PROVIDERS=[{"name": "w", "type": "wrong"}])


def test_entry_point_may_not_shadow_a_built_in(make_app, tmp_path, monkeypatch):
    _distribution(tmp_path, "lunaos_fake_openai", f"""
        [{registry.ENTRY_POINT_GROUP}]
        openai = lunaos_shout_provider:Shout
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="'openai' is built in"):
        make_app(LLM_OFFLINE=False)
