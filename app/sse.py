"""Server-sent events: `publish(channel, event, data)` and `stream(channel) -> Response`.

Fan-out
    Without Redis, a per-app in-process broker hands each event to the local
    subscriber queues. With `REDIS_URL`, `publish` is a Redis PUBLISH on
    `<REDIS_KEY_PREFIX>sse:<channel>` and every process keeps ONE pub/sub
    connection (per Redis URL) read by one background listener thread (a
    greenlet under gevent workers), which dispatches to the local subscriber
    queues. A channel is SUBSCRIBEd on Redis only while a local client watches
    it, so a process receives only the traffic its clients asked for, whether
    the publisher is an RQ worker, another gunicorn worker or another host.

Ordering and resume
    `stream()` subscribes first, waits until Redis confirms the subscription,
    and only then calls the producer's `replay(last_event_id)` for stored
    history: an event published meanwhile is either in the replay or in the
    live queue, never in neither. Live events whose id was replayed are
    dropped; when ids are decimal integers (a per-channel sequence), live
    events not above the highest replayed id are dropped too.

Slow clients
    Each subscriber has a bounded queue. A client that falls that far behind
    (or a lost Redis connection) ends its stream; the browser's EventSource
    reconnects with `Last-Event-ID` and the producer's replay fills the gap.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, request
from redis import Redis

from . import redis_client
from .json_encoding import ascii_json

log = logging.getLogger("lunaos.sse")

QUEUE_SIZE = 1000  # events buffered per client before it is cut off
SUBSCRIBE_WAIT_SECONDS = 5.0  # how long stream() waits for Redis to confirm a subscription
RETRY_MS = 3000  # reconnection delay suggested to EventSource clients

Replay = Callable[[str | None], Iterable[tuple[str, Any, str | None]]]  # -> (event, data, id)
Terminal = Callable[[str, Any], bool]


@dataclass(frozen=True)
class Message:
    event: str
    data: Any
    id: str | None = None

    def encode(self) -> str:
        return format_event(self.data, event=self.event, id=self.id)


def format_event(data: Any, *, event: str | None = None, id: str | None = None, retry: int | None = None) -> str:
    """One SSE frame. A str is sent as is (one `data:` line per line); anything else as compact JSON."""
    lines = []
    if id is not None:
        lines.append(f"id: {_field(id)}")
    if event:
        lines.append(f"event: {_field(event)}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    text = data if isinstance(data, str) else ascii_json(data)
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return "\n".join(lines) + "\n\n"


def _field(value: str) -> str:
    # A newline would end the field early and let data forge frames.
    return str(value).replace("\r", " ").replace("\n", " ").replace("\0", "")


class Subscription:
    """One client's view of one channel: a bounded queue the broker fills."""

    CLOSED = object()

    def __init__(self, channel: str, ready: threading.Event):
        self.channel = channel
        self.ready = ready
        self.closed = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_SIZE)

    def deliver(self, message: Message) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.warning("SSE client on %s fell %d events behind; ending its stream", self.channel, QUEUE_SIZE)
            self.closed = True  # the reader drains what it has, then stops

    def close(self) -> None:
        self.closed = True
        try:
            self._queue.put_nowait(self.CLOSED)
        except queue.Full:
            pass

    def get(self, timeout: float) -> Any:
        """The next `Message`, None on timeout, `CLOSED` once the broker dropped us."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return self.CLOSED if self.closed else None
        return item


class LocalBroker:
    """In-process fan-out (the embedded default): one per app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, set[Subscription]] = {}

    def subscribe(self, channel: str) -> Subscription:
        ready = threading.Event()
        ready.set()
        sub = Subscription(channel, ready)
        with self._lock:
            self._channels.setdefault(channel, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._channels.get(sub.channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._channels[sub.channel]

    def publish(self, channel: str, message: Message) -> None:
        with self._lock:
            subs = list(self._channels.get(channel, ()))
        for sub in subs:
            sub.deliver(message)

    def subscriber_count(self, channel: str) -> int:
        with self._lock:
            return len(self._channels.get(channel, ()))


@dataclass
class _Channel:
    subscribers: set[Subscription] = field(default_factory=set)
    ready: threading.Event = field(default_factory=threading.Event)


class RedisBroker:
    """The process's single pub/sub connection for one Redis URL, shared by every app using it.

    Channels here are full Redis channel names (already prefixed by the app).
    """

    PING_SECONDS = 30.0  # keeps idle connections through NATs and finds dead ones

    def __init__(self, url: str):
        self.url = url
        # No socket timeout: the listener blocks in reads by design. No redis-py health checks:
        # they make a subscribing thread read the socket while the listener reads it.
        self._redis = Redis.from_url(url, socket_connect_timeout=5, socket_keepalive=True, health_check_interval=0)
        self._lock = threading.Lock()
        self._pubsub = self._redis.pubsub()
        self._channels: dict[str, _Channel] = {}
        # SUBSCRIBE/UNSUBSCRIBE commands sent per channel and not yet confirmed: a channel is live
        # on the server only once every command sent for it has been answered.
        self._inflight: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    def subscribe(self, channel: str) -> Subscription:
        with self._lock:
            state = self._channels.get(channel)
            if state is None:
                state = _Channel()
                try:
                    self._send(channel, "subscribe")
                except Exception:
                    self._inflight.pop(channel, None)
                    raise
                self._channels[channel] = state
            sub = Subscription(channel, state.ready)
            state.subscribers.add(sub)
            self._ensure_listener()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            state = self._channels.get(sub.channel)
            if state is None or sub not in state.subscribers:
                return
            state.subscribers.discard(sub)
            if not state.subscribers:
                del self._channels[sub.channel]
                try:
                    self._send(sub.channel, "unsubscribe")
                except Exception as error:  # the listener resets the connection on its next read
                    log.warning("SSE unsubscribe from %s failed: %s", sub.channel, error)

    def subscriber_count(self, channel: str) -> int:
        with self._lock:
            state = self._channels.get(channel)
            return len(state.subscribers) if state else 0

    def _send(self, channel: str, command: str) -> None:
        # Called with the lock held, so commands and bookkeeping stay in the same order.
        self._inflight[channel] = self._inflight.get(channel, 0) + 1
        getattr(self._pubsub, command)(channel)

    def _ensure_listener(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._listen, name="lunaos-sse-listener", daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        backoff = 0.5
        last_ping = time.monotonic()
        while True:
            pubsub = self._pubsub
            try:
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._handle(message)
                if pubsub.subscribed and time.monotonic() - last_ping > self.PING_SECONDS:
                    last_ping = time.monotonic()
                    pubsub.ping()
                backoff = 0.5
            except Exception as error:
                log.warning("SSE Redis listener lost its connection (%s); ending open streams", error)
                self._reset(pubsub)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = _text(message.get("channel"))
        if kind in ("subscribe", "unsubscribe"):
            with self._lock:
                left = self._inflight.get(channel, 0) - 1
                if left > 0:
                    self._inflight[channel] = left
                    return
                self._inflight.pop(channel, None)
                state = self._channels.get(channel)
                if state is not None:
                    state.ready.set()
            return
        if kind != "message":
            return
        try:
            raw = json.loads(message["data"])
            event = Message(event=raw["event"], data=raw.get("data"), id=raw.get("id"))
        except (ValueError, KeyError, TypeError):
            log.warning("SSE: ignoring a malformed message on %s", channel)
            return
        with self._lock:
            state = self._channels.get(channel)
            subs = list(state.subscribers) if state else []
        for sub in subs:
            sub.deliver(event)

    def _reset(self, broken: Any) -> None:
        """Drop the connection and every local subscription: their clients reconnect and replay."""
        with self._lock:
            if broken is not self._pubsub:
                return
            for state in self._channels.values():
                for sub in state.subscribers:
                    sub.close()
            self._channels.clear()
            self._inflight.clear()
            try:
                broken.close()
            except Exception:
                pass
            self._pubsub = self._redis.pubsub()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_redis_brokers: dict[tuple[int, str], RedisBroker] = {}
_redis_brokers_lock = threading.Lock()


def _redis_broker(url: str) -> RedisBroker:
    # Keyed by pid too: a broker (and its listener thread) never survives a fork.
    key = (os.getpid(), url)
    with _redis_brokers_lock:
        broker = _redis_brokers.get(key)
        if broker is None:
            broker = _redis_brokers[key] = RedisBroker(url)
        return broker


def _channel_name(channel: str, app: Flask) -> str:
    return redis_client.key("sse:" + channel, app)


def broker(app: Flask | None = None) -> LocalBroker | RedisBroker:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    url = app.config.get("REDIS_URL")
    return _redis_broker(url) if url else app.extensions["lunaos.sse"]


def subscribe(channel: str, app: Flask | None = None) -> tuple[LocalBroker | RedisBroker, Subscription]:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = broker(app)
    name = _channel_name(channel, app) if isinstance(found, RedisBroker) else channel
    return found, found.subscribe(name)


def subscriber_count(channel: str, app: Flask | None = None) -> int:
    """Local clients watching `channel` in this process (for tests and diagnostics)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = broker(app)
    return found.subscriber_count(_channel_name(channel, app) if isinstance(found, RedisBroker) else channel)


def publish(channel: str, event: str, data: Any, id: str | int | None = None, app: Flask | None = None) -> None:
    """Send `event` to every client streaming `channel`, in any process that shares Redis.

    Best effort: a failure is logged, never raised (an event is not worth failing a job or a
    request over; clients that missed it catch up through replay).
    """
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    message = Message(event=event, data=data, id=None if id is None else str(id))
    client = redis_client.client(app)
    try:
        if client is None:
            app.extensions["lunaos.sse"].publish(channel, message)
        else:
            payload = json.dumps({"event": message.event, "data": message.data, "id": message.id}, default=str)
            client.publish(_channel_name(channel, app), payload)
    except Exception:
        log.exception("SSE publish on %s failed", channel)


class _Dedup:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.high: int | None = None

    def add(self, id: str | None) -> None:
        if id is None:
            return
        self.seen.add(id)
        if id.isdigit():
            self.high = max(self.high or 0, int(id))

    def duplicate(self, id: str | None) -> bool:
        if id is None:
            return False
        if id in self.seen:
            return True
        return self.high is not None and id.isdigit() and int(id) <= self.high


def stream(channel: str, *, replay: Replay | None = None, last_event_id: str | None = None,
           terminal: Terminal | None = None) -> Response:
    """An SSE response following `channel` until the client leaves or `terminal(event, data)` is true.

    `replay(last_event_id)` yields stored `(event, data, id)` after that id (or from the start);
    it runs in a fresh app context (the request's is gone by then). `last_event_id` defaults to
    the request's `Last-Event-ID` header.

    The body runs outside the request context on purpose: the request (and its database
    connection) is torn down as soon as the view returns, not kept for the life of the stream.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if last_event_id is None:
        last_event_id = request.headers.get("Last-Event-ID") or None
    heartbeat = float(app.config["SSE_HEARTBEAT_SECONDS"])

    def generate() -> Iterator[str]:
        # Subscribing here, not in stream(): a response that is never iterated leaks nothing.
        try:
            found, sub = subscribe(channel, app)
        except Exception as error:
            log.warning("SSE: cannot subscribe to %s (%s); asking the client to retry", channel, error)
            yield f"retry: {RETRY_MS}\n\n"
            return
        try:
            if not sub.ready.wait(SUBSCRIBE_WAIT_SECONDS):
                log.warning("SSE: Redis did not confirm the subscription to %s in time", channel)
            yield f"retry: {RETRY_MS}\n\n"  # sends the headers at once; tells EventSource how soon to retry
            dedup = _Dedup()
            if replay is not None:
                with app.app_context():
                    history = list(replay(last_event_id))
                for event, data, event_id in history:
                    event_id = None if event_id is None else str(event_id)
                    dedup.add(event_id)
                    yield format_event(data, event=event, id=event_id)
                    if terminal is not None and terminal(event, data):
                        return
            while True:
                message = sub.get(timeout=heartbeat)
                if message is Subscription.CLOSED:
                    return
                if message is None:
                    yield ": heartbeat\n\n"
                    continue
                if dedup.duplicate(message.id):
                    continue
                yield message.encode()
                if terminal is not None and terminal(message.event, message.data):
                    return
        finally:
            found.unsubscribe(sub)

    response = Response(generate(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


def init_app(app: Flask) -> None:
    app.extensions["lunaos.sse"] = LocalBroker()
