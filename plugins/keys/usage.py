"""Per-key usage (requests, errors, last use) without a database write per request.

Each process counts in memory and flushes every KEYS_USAGE_FLUSH_SECONDS:
to Redis counters when Redis is configured (then any process moves them into
the database every KEYS_USAGE_PERSIST_SECONDS, decrementing only what it
wrote, so nothing counted in between is lost), else straight to the database
in one UPDATE per key. Readers add what is still pending.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, UTC

import sqlalchemy as sa
from flask import Flask, current_app

from app import redis_client
from app.extensions import db, per_app

from .models import ApiKey


@dataclass
class Counts:
    requests: int = 0
    errors: int = 0
    last_used: float = 0.0  # epoch seconds

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.last_used = max(self.last_used, other.last_used)


@dataclass
class _Buffer:
    pending: dict[str, Counts] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_flush: float = field(default_factory=time.monotonic)
    last_persist: float = field(default_factory=time.monotonic)


def _buffer(app: Flask | None = None) -> _Buffer:
    return per_app("lunaos.keys.usage", _Buffer, app)


def _hash_key(key_id: str) -> str:
    return redis_client.key(f"keys:usage:{key_id}")


def _dirty_set() -> str:
    return redis_client.key("keys:usage:dirty")


def record(key_id: str, error: bool) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    buffer = _buffer(app)
    interval = float(app.config["KEYS_USAGE_FLUSH_SECONDS"])
    with buffer.lock:
        counts = buffer.pending.get(key_id)
        if counts is None:
            counts = buffer.pending[key_id] = Counts()
        counts.requests += 1
        counts.errors += int(error)
        counts.last_used = time.time()
        due = time.monotonic() - buffer.last_flush >= interval
    if due:
        flush()


def flush() -> None:
    buffer = _buffer()
    with buffer.lock:
        pending, buffer.pending = buffer.pending, {}
        buffer.last_flush = time.monotonic()
    client = redis_client.client()
    if client is None:
        _add_to_database(pending)
        return
    if pending:
        pipe = client.pipeline(transaction=False)
        for key_id, counts in pending.items():
            name = _hash_key(key_id)
            pipe.hincrby(name, "requests", counts.requests)
            pipe.hincrby(name, "errors", counts.errors)
            pipe.hset(name, f"seen:{counts.last_used:.3f}", 1)  # max taken when persisted
            pipe.sadd(_dirty_set(), key_id)
        pipe.execute()
    if time.monotonic() - buffer.last_persist >= float(current_app.config["KEYS_USAGE_PERSIST_SECONDS"]):
        buffer.last_persist = time.monotonic()
        persist_from_redis()


def persist_from_redis() -> None:
    """Move Redis counters into the database; one process at a time."""
    client = redis_client.client()
    if client is None or not client.set(redis_client.key("keys:usage:lock"), 1, nx=True, ex=30):
        return
    try:
        for raw_id in client.smembers(_dirty_set()):
            key_id = raw_id.decode()
            values = client.hgetall(_hash_key(key_id))
            counts = _from_hash(values)
            _add_to_database({key_id: counts})
            pipe = client.pipeline(transaction=True)
            pipe.hincrby(_hash_key(key_id), "requests", -counts.requests)
            pipe.hincrby(_hash_key(key_id), "errors", -counts.errors)
            seen = [k for k in values if k.startswith(b"seen:")]
            if seen:
                pipe.hdel(_hash_key(key_id), *seen)
            pipe.execute()
            left = _from_hash(client.hgetall(_hash_key(key_id)))
            if left.requests == 0 and left.errors == 0:  # a later flush re-adds it to the set
                client.srem(_dirty_set(), key_id)
    finally:
        client.delete(redis_client.key("keys:usage:lock"))


def _from_hash(values: dict[bytes, bytes]) -> Counts:
    seen = [float(k[5:]) for k in values if k.startswith(b"seen:")]
    return Counts(int(values.get(b"requests", 0)), int(values.get(b"errors", 0)), max(seen, default=0.0))


def _add_to_database(pending: dict[str, Counts]) -> None:
    if not pending:
        return
    # A separate connection: the request's session must not be committed by this.
    with db.engine.begin() as connection:
        for key_id, counts in pending.items():
            last_used = datetime.fromtimestamp(counts.last_used, tz=UTC) if counts.last_used else None
            values: dict = {"request_count": ApiKey.request_count + counts.requests,
                            "error_count": ApiKey.error_count + counts.errors}
            if last_used is not None:
                stamp = sa.literal(last_used, ApiKey.last_used_at.type)  # through the UTC column type
                values["last_used_at"] = sa.case(
                    (sa.or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < stamp), stamp),
                    else_=ApiKey.last_used_at)
            connection.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(**values))


def pending_for(key_ids: list[str]) -> dict[str, Counts]:
    """Counts not yet in the database: this process's buffer, or with Redis what is there."""
    result: dict[str, Counts] = {}
    client = redis_client.client()
    if client is None:
        # Not flushed here: the caller has already read the rows, so counts written now
        # would be missing from what it reports. Without Redis this buffer holds them all.
        buffer = _buffer()
        wanted = set(key_ids)
        with buffer.lock:
            for key_id, counts in buffer.pending.items():
                if key_id in wanted:
                    result[key_id] = Counts(counts.requests, counts.errors, counts.last_used)
        return result
    flush()
    if key_ids:
        pipe = client.pipeline(transaction=False)
        for key_id in key_ids:
            pipe.hgetall(_hash_key(key_id))
        for key_id, values in zip(key_ids, pipe.execute(), strict=True):
            if values:
                result[key_id] = _from_hash(values)
    return result
