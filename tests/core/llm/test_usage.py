"""Token usage: daily aggregates per user, key, provider and model, on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import llm
from app.extensions import db
from app.ids import utcnow
from app.llm import LlmUsage
from tests.support.llm_server import llm_providers
from tests.support.servers import wait_until

pytestmark = pytest.mark.db


def rows(app) -> list[tuple]:
    with app.app_context():
        return [tuple(r) for r in db.session.execute(sa.select(
            LlmUsage.user_id, LlmUsage.key_id, LlmUsage.provider, LlmUsage.model, LlmUsage.requests,
            LlmUsage.prompt_tokens, LlmUsage.completion_tokens).order_by(LlmUsage.key_id, LlmUsage.model))]


def test_records_aggregate_per_day_user_key_and_model(make_app):
    app = make_app(LLM_OFFLINE=False)
    with app.app_context():
        for _ in range(2):
            llm.record_usage(user_id="usr_a", key_id="key_1", provider="p", model="m",
                             usage=llm.Usage(10, 5))
        llm.record_usage(user_id="usr_a", key_id=None, provider="p", model="m", usage=llm.Usage(1, 1))
        llm.record_usage(user_id="usr_a", key_id="key_1", provider="p", model="m2", usage=llm.Usage(3, 4))
        llm.record_usage(user_id="usr_b", key_id=None, provider="p", model="m", usage=llm.Usage(7, 7, estimated=True))
        usage = llm.usage_for("usr_a")
    today = utcnow().date().isoformat()
    assert usage == [
        {"day": today, "provider": "p", "model": "m", "key_id": None, "requests": 1, "prompt_tokens": 1,
         "completion_tokens": 1, "total_tokens": 2},
        {"day": today, "provider": "p", "model": "m", "key_id": "key_1", "requests": 2, "prompt_tokens": 20,
         "completion_tokens": 10, "total_tokens": 30},
        {"day": today, "provider": "p", "model": "m2", "key_id": "key_1", "requests": 1, "prompt_tokens": 3,
         "completion_tokens": 4, "total_tokens": 7},
    ]
    assert len(rows(app)) == 4  # one row per (day, user, key, provider, model), however many requests


def test_usage_for_covers_the_asked_days(make_app):
    app = make_app(LLM_OFFLINE=False)
    with app.app_context():
        old = utcnow().date() - timedelta(days=40)
        db.session.add(LlmUsage(user_id="usr_a", day=old, key_id="", provider="p", model="m", requests=3,
                                prompt_tokens=30, completion_tokens=3))
        db.session.commit()
        llm.record_usage(user_id="usr_a", key_id=None, provider="p", model="m", usage=llm.Usage(1, 1))
        assert [u["day"] for u in llm.usage_for("usr_a")] == [utcnow().date().isoformat()]
        assert [u["day"] for u in llm.usage_for("usr_a", days=60)] == [utcnow().date().isoformat(), old.isoformat()]


def test_concurrent_records_lose_nothing(make_app):
    app = make_app(LLM_OFFLINE=False, LLM_USAGE_FLUSH_SECONDS=0.01)

    def work() -> None:
        with app.app_context():
            for _ in range(25):
                llm.record_usage(user_id="usr_c", key_id="key_c", provider="p", model="m", usage=llm.Usage(2, 1))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        [usage] = llm.usage_for("usr_c")
    assert (usage["requests"], usage["prompt_tokens"], usage["completion_tokens"]) == (200, 400, 200)


def test_buffered_records_reach_the_database_without_a_read(make_app):
    app = make_app(LLM_OFFLINE=False, LLM_USAGE_FLUSH_SECONDS=0.05)
    with app.app_context():
        llm.record_usage(user_id="usr_d", key_id="key_d", provider="p", model="m", usage=llm.Usage(4, 2))
    # Another process reading the table sees it once the timer has flushed this one's buffer.
    wait_until(lambda: rows(app) == [("usr_d", "key_d", "p", "m", 1, 4, 2)], timeout=10, message="usage flush")


@pytest.mark.xdist_group("llm")
@pytest.mark.slow
def test_chat_and_stream_usage_is_recorded(make_app, llm_upstream):
    app = make_app(LLM_PROVIDERS=llm_providers(llm_upstream))
    request = llm.ChatRequest(messages=[llm.Message("user", "Name a colour.")], temperature=0, max_tokens=5)
    with app.app_context():
        result = llm.chat(request)
        llm.record_usage(user_id="usr_u", key_id="key_u", provider=result.provider, model=result.model,
                         usage=result.usage)
        stream = llm.stream(request)
        for _ in stream:
            pass
        llm.record_usage(user_id="usr_u", key_id="key_u", provider=stream.provider, model=stream.model,
                         usage=stream.usage)
        usage = llm.usage_for("usr_u")
    total_prompt = result.usage.prompt_tokens + stream.usage.prompt_tokens
    total_completion = result.usage.completion_tokens + stream.usage.completion_tokens
    assert total_prompt > 0 and total_completion > 0
    assert sum(u["requests"] for u in usage) == 2
    assert sum(u["prompt_tokens"] for u in usage) == total_prompt
    assert sum(u["completion_tokens"] for u in usage) == total_completion
    assert {(u["provider"], u["key_id"]) for u in usage} == {(llm_upstream.name, "key_u")}
