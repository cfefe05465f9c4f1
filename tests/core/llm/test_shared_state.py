"""Router state shared through Redis: two app instances (two workers, or two hosts) see each other's
in-flight requests, latencies and cool-downs; a dead process's in-flight marks expire; Redis failing
degrades to this process's state instead of failing requests."""
from __future__ import annotations

import time

import pytest

from app import llm
from tests.support.llm_server import llm_providers
from tests.support.servers import free_port, wait_until


def ask(text: str = "hello", max_tokens: int = 4) -> llm.ChatRequest:
    return llm.ChatRequest(messages=[llm.Message("user", text)], temperature=0, max_tokens=max_tokens)


def echo_pair(**fields):
    return [{"name": "a", "type": "echo", "priority": 1, **fields}, {"name": "b", "type": "echo", "priority": 2}]


def status_of(app, name: str) -> dict:
    with app.app_context():
        return next(p for p in llm.status()["providers"] if p["name"] == name)


@pytest.fixture
def two_apps(make_app, redis_url, redis_client, echo_kind):
    def build(**config):
        return (make_app(REDIS_URL=redis_url, **config), make_app(REDIS_URL=redis_url, **config))
    return build


def test_in_flight_counts_are_shared(two_apps):
    one, two = two_apps(LLM_PROVIDERS=echo_pair(), LLM_STRATEGY="least_loaded")
    with one.app_context():
        held = llm.stream(ask("abc"))
    # The mark may be written just after the call started (off the request path).
    wait_until(lambda: status_of(two, held.provider)["active_requests"] == 1, timeout=5, message="the mark")
    with two.app_context():
        assert llm.chat(ask()).provider != held.provider  # the other instance's request counts
    held.close()
    assert status_of(two, held.provider)["active_requests"] == 0


def test_latency_and_cooldown_are_shared(two_apps):
    one, two = two_apps(LLM_PROVIDERS=echo_pair(fail_first=99), LLM_FAILURE_THRESHOLD=1,
                        LLM_COOLDOWN_SECONDS=300)
    with one.app_context():
        result = llm.chat(ask())
    assert result.provider == "b"
    seen = status_of(two, "a")
    assert seen["available"] is False and seen["cooldown_until"]
    # Written after the answer, off the request path: another instance sees it a moment later.
    wait_until(lambda: status_of(two, "b")["avg_latency_ms"] is not None, timeout=5, message="b's latency")
    with two.app_context():
        skipped = llm.chat(ask())
        assert [(a.provider, a.outcome) for a in skipped.attempts] == [("a", "skipped"), ("b", "ok")]
        assert llm.router().by_name["a"].calls == 0  # this instance never called it: the breaker was shared


def test_only_one_instance_probes_after_the_cooldown(two_apps):
    one, two = two_apps(LLM_PROVIDERS=echo_pair(), LLM_FAILURE_THRESHOLD=1, LLM_COOLDOWN_SECONDS=0)
    with one.app_context():
        state = llm.router().state
        state.record_failure("a", 1, 0)
        assert state.admit("a", 30) == "probe"
    with two.app_context():
        assert llm.router().state.admit("a", 30) == "open"  # the probe is in flight elsewhere
        llm.router().state.record_success("a")
        assert llm.router().state.admit("a", 30) == "closed"


def test_in_flight_marks_of_a_dead_process_expire(two_apps):
    one, two = two_apps(LLM_PROVIDERS=echo_pair())
    with one.app_context():
        redis_state = llm.router().state.redis
        redis_state.begin("a", 0.2)  # never ended: its process "died" mid-request
        assert status_of(two, "a")["active_requests"] == 1
    wait_until(lambda: status_of(two, "a")["active_requests"] == 0, timeout=10, message="lease expiry")


def test_redis_down_falls_back_to_local_state(make_app, echo_kind):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", LLM_PROVIDERS=echo_pair(fail_first=1),
                   LLM_FAILURE_THRESHOLD=1, LLM_COOLDOWN_SECONDS=300, LLM_STRATEGY="least_loaded")
    with app.app_context():
        result = llm.chat(ask())
        assert result.provider == "b"
        assert llm.router().state.backend == "memory"
        status = {p["name"]: p for p in llm.status()["providers"]}
        assert status["a"]["available"] is False and status["b"]["avg_latency_ms"] is not None
        held = llm.stream(ask())
        assert status_of(app, held.provider)["active_requests"] == 1
        held.close()
        assert status_of(app, held.provider)["active_requests"] == 0


@pytest.mark.xdist_group("llm")
@pytest.mark.slow
def test_least_loaded_across_instances_with_real_upstreams(make_app, redis_url, redis_client, llm_upstreams):
    first, second = llm_upstreams
    config = {"REDIS_URL": redis_url, "LLM_PROVIDERS": llm_providers(first, second), "LLM_STRATEGY": "least_loaded"}
    one, two = make_app(**config), make_app(**config)
    with one.app_context():
        busy = llm.stream(ask("Tell me a story.", max_tokens=32))
    try:
        with two.app_context():
            assert llm.chat(ask(max_tokens=2)).provider != busy.provider
            assert next(p for p in llm.status()["providers"] if p["name"] == busy.provider)["active_requests"] == 1
    finally:
        busy.close()
    with two.app_context():
        assert [p["active_requests"] for p in llm.status()["providers"]] == [0, 0]
        assert all(p["avg_latency_ms"] for p in llm.status()["providers"])  # both measured, by either instance


def test_bookkeeping_after_an_answer_is_in_order_and_seen_here_at_once(make_app, redis_url, redis_client,
                                                                        echo_kind):
    """The writes after an answer are deferred, yet this process reads them at once, and a failure
    that follows a success is counted after that success's breaker reset, not wiped by it."""
    app = make_app(REDIS_URL=redis_url, LLM_PROVIDERS=[{"name": "a", "type": "echo"}], LLM_FAILURE_THRESHOLD=1,
                   LLM_COOLDOWN_SECONDS=300)
    with app.app_context():
        state = llm.router().state
        for _ in range(20):
            llm.chat(ask())
        assert status_of(app, "a")["active_requests"] == 0 and status_of(app, "a")["avg_latency_ms"] is not None
        verdict, ticket = state.enter("a", 30.0, 30.0)
        state.complete(ticket, 5.0)  # queued: resets the breaker
        assert state.record_failure("a", 1, 300) is not None  # opens it after the reset, not before
        assert status_of(app, "a")["available"] is False


def test_a_breaker_opened_elsewhere_ends_closed_verdicts_known_here(two_apps):
    """With the bus connected, an instance that saw a provider's breaker closed calls it without
    asking Redis first, until a message says the breaker opened: then it skips it at once."""
    one, two = two_apps(LLM_PROVIDERS=echo_pair(), LLM_FAILURE_THRESHOLD=1, LLM_COOLDOWN_SECONDS=300)
    with two.app_context():
        state = llm.router().state
        state.bus.version("warm", "up")  # starts the listener
        wait_until(lambda: state.bus.healthy, timeout=5, message="the invalidation listener")
        for _ in range(3):
            assert llm.chat(ask()).provider == "a"
        assert "a" in state._closed  # the verdict is known here: no round trip before the call
    with one.app_context():
        assert llm.router().state.record_failure("a", 1, 300) is not None  # opens it, announces it
    with two.app_context():
        result = llm.chat(ask())
        assert [(a.provider, a.outcome) for a in result.attempts] == [("a", "skipped"), ("b", "ok")]
        assert llm.router().by_name["a"].calls == 3


def test_a_success_written_late_does_not_close_a_newer_opening(two_apps):
    """Successes are written off the request path: one that arrives after another instance's newer
    failure opened the breaker must not close it again; one from after the failure does."""
    one, two = two_apps(LLM_PROVIDERS=echo_pair(), LLM_FAILURE_THRESHOLD=1, LLM_COOLDOWN_SECONDS=300)
    with two.app_context():
        answered = time.time()  # an answer of "a" here, its bookkeeping not written yet
    with one.app_context():
        assert llm.router().state.record_failure("a", 1, 300) is not None
    with two.app_context():
        shared = llm.router().state.redis
        shared.succeeded("a", 5.0, answered)
        assert shared.cooldowns(["a"])["a"] is not None  # still cooling down
        shared.succeeded("a", 5.0, time.time())  # an answer after the failure: it recovered
        assert shared.cooldowns(["a"])["a"] is None


def test_a_short_stream_leaves_no_mark_behind(make_app, redis_url, redis_client, echo_kind):
    """With the breaker known closed, the in-flight mark is written off the request path; a stream
    that ends before the mark was written must still not leave it counted."""
    app = make_app(REDIS_URL=redis_url, LLM_PROVIDERS=[{"name": "a", "type": "echo"}])
    with app.app_context():
        state = llm.router().state
        state.bus.version("warm", "up")
        wait_until(lambda: state.bus.healthy, timeout=5, message="the invalidation listener")
        llm.chat(ask())  # Redis says closed: later calls take the fast path
        for _ in range(20):
            stream = llm.stream(ask("abc"))
            list(stream)
        assert status_of(app, "a")["active_requests"] == 0
        members = redis_client.zrange(state.redis._k("inflight", "a"), 0, -1)
        assert members == []
