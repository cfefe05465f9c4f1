"""Token usage per day, user, key, provider and model, written in batches off the request path.

`record()` adds to this process's buffer; a one-shot timer writes the buffer
LLM_USAGE_FLUSH_SECONDS later in one transaction of upserts (0: at once, in
the caller). Rows are daily aggregates, so the write is an increment:
`INSERT ... ON CONFLICT DO UPDATE SET requests = requests + excluded.requests`,
the same statement on SQLite and PostgreSQL, keys in sorted order so that two
processes never deadlock on each other's rows. A failed write puts the counts
back for the next flush; what is buffered at exit is written by an atexit hook.
"""
from __future__ import annotations

import atexit
import logging
import threading
import weakref
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app

from ..extensions import db, per_app
from ..ids import utcnow
from .models import LlmUsage
from .types import Usage

log = logging.getLogger("lunaos.llm")
_Key = tuple[date, str, str, str, str]  # day, user_id, key_id, provider, model
_apps: weakref.WeakSet[Flask] = weakref.WeakSet()


@dataclass
class _Buffer:
    pending: dict[_Key, list[int]] = field(default_factory=dict)  # [requests, prompt, completion]
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Held while a batch is written: a reader's flush waits for a timer's write in progress,
    # so it sees it. Made on first use, in the serving process (cooperative under gevent).
    writing: threading.Lock = field(default_factory=threading.Lock)
    scheduled: bool = False


def _buffer(app: Flask) -> _Buffer:
    return per_app("lunaos.llm.usage", _Buffer, app)


def record(*, user_id: str | None, key_id: str | None, provider: str, model: str, usage: Usage,
           app: Flask | None = None) -> None:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    key = (utcnow().date(), (user_id or "")[:40], (key_id or "")[:40], provider[:64], (model or "")[:200])
    buffer = _buffer(app)
    with buffer.lock:
        counts = buffer.pending.setdefault(key, [0, 0, 0])
        counts[0] += 1
        counts[1] += max(0, int(usage.prompt_tokens))
        counts[2] += max(0, int(usage.completion_tokens))
        delay = float(app.config.get("LLM_USAGE_FLUSH_SECONDS", 0.2))
        schedule = delay > 0 and not buffer.scheduled
        buffer.scheduled = buffer.scheduled or schedule
    _apps.add(app)
    if delay <= 0:
        flush(app)
    elif schedule:
        timer = threading.Timer(delay, _flush_later, args=(weakref.ref(app),))
        timer.daemon = True
        timer.start()


def _flush_later(ref: weakref.ref[Flask]) -> None:
    app = ref()
    if app is None:
        return
    _buffer(app).scheduled = False
    with app.app_context():
        flush(app)


def flush(app: Flask | None = None) -> None:
    """Write what this process has buffered (also called before reading)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    buffer = _buffer(app)
    with buffer.writing:
        with buffer.lock:
            pending, buffer.pending = buffer.pending, {}
        if not pending:
            return
        try:
            with app.app_context(), db.engine.begin() as connection:
                _upsert(connection, pending)
        except Exception:
            log.exception("llm usage: writing %d row(s) failed; kept for the next flush", len(pending))
            with buffer.lock:
                for key, counts in pending.items():
                    merged = buffer.pending.setdefault(key, [0, 0, 0])
                    for i in range(3):
                        merged[i] += counts[i]


def _upsert(connection: sa.Connection, pending: dict[_Key, list[int]]) -> None:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the project supports these two
        raise RuntimeError(f"llm usage: no upsert for database {dialect!r}")
    rows = [{"day": day, "user_id": user, "key_id": key_id, "provider": provider, "model": model,
             "requests": counts[0], "prompt_tokens": counts[1], "completion_tokens": counts[2]}
            for (day, user, key_id, provider, model), counts in sorted(pending.items())]
    statement = insert(LlmUsage)
    statement = statement.on_conflict_do_update(
        index_elements=[LlmUsage.user_id, LlmUsage.day, LlmUsage.key_id, LlmUsage.provider, LlmUsage.model],
        set_={"requests": LlmUsage.requests + statement.excluded.requests,
              "prompt_tokens": LlmUsage.prompt_tokens + statement.excluded.prompt_tokens,
              "completion_tokens": LlmUsage.completion_tokens + statement.excluded.completion_tokens})
    connection.execute(statement, rows)


def usage_for(user_id: str, days: int = 30) -> list[dict[str, Any]]:
    """The user's usage of the last `days` days (today included), newest first."""
    flush()
    since = utcnow().date() - timedelta(days=max(1, int(days)) - 1)
    rows = db.session.execute(
        sa.select(LlmUsage).where(LlmUsage.user_id == user_id, LlmUsage.day >= since)
        .order_by(LlmUsage.day.desc(), LlmUsage.provider, LlmUsage.model, LlmUsage.key_id)).scalars()
    return [{"day": row.day.isoformat(), "provider": row.provider, "model": row.model, "key_id": row.key_id or None,
             "requests": row.requests, "prompt_tokens": row.prompt_tokens,
             "completion_tokens": row.completion_tokens,
             "total_tokens": row.prompt_tokens + row.completion_tokens} for row in rows]


@atexit.register
def _flush_all() -> None:
    for app in list(_apps):
        try:
            flush(app)
        except Exception:  # noqa: BLE001 - the process is ending; nothing else to do
            pass
