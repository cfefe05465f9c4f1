"""Cross-process cache invalidation over Redis pub/sub.

Processes cache what every request needs (a user's authorisation state, a
verified API key). A change publishes `topic:key` on one channel; every
process's listener bumps a local version for that key, so the next lookup
there reloads. Callers compare `version(topic, key)` with the version they
cached under.

"Next request" holds at once, not after a listener got round to it:
- PUBLISH can return to the writer before Redis has written the message to the
  subscribers' sockets (it writes them all in one pass, in no set order). So
  `publish()` waits until its own process's listener (started if need be)
  hears the message back, a fraction of a millisecond: by then the other
  subscribers' sockets hold it too.
- `version()` first checks (one non-blocking poll) whether the listener has
  unread or half-handled messages and waits briefly for it to catch up, rather
  than answer from a cache that a change already received is about to
  invalidate.

Messages are fire-and-forget: a listener that loses its connection may have
missed some. So `healthy` is false from the moment the connection drops until
it is back and every version has been moved on (all caches dropped); callers
must not trust their caches while it is false, and check the source instead.
Without Redis there is no listener: `healthy` is always false.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
import time
import weakref
from collections import defaultdict
from typing import Any

from flask import Flask, current_app
from redis import Redis

from . import redis_client
from .process import pid as current_pid

log = logging.getLogger("lunaos.invalidation")
RETRY_SECONDS = 1.0
CATCH_UP_SECONDS = 0.05  # longest a lookup waits for the listener to apply messages already received


class Invalidation:
    def __init__(self, client: Redis | None, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.generation = 0  # moved on when every cache must be dropped
        self.versions: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.healthy = False
        self._pid = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None  # the listener's connection, polled by lookups
        self._handling = False  # the listener has read messages it has not applied yet
        self._heard: defaultdict[tuple[str, str], int] = defaultdict(int)  # messages received, per key

    def version(self, topic: str, key: str) -> str:
        self._ensure_listener()
        if self.healthy and self._pending():
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while self._pending() and time.monotonic() < deadline:
                time.sleep(0.0002)
        return f"{self.generation}.{self.versions.get((topic, key), 0)}"

    def _pending(self) -> bool:
        if self._handling:
            return True
        sock = self._sock
        if sock is None:
            return False
        try:
            return bool(_poll_select()([sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed under us: the listener is reconnecting
            return False

    def publish(self, topic: str, key: str) -> None:
        """Tell every process (this one at once) that `key` of `topic` changed."""
        self._bump(topic, key)
        if self.client is None:
            return
        # Our own listener hearing it back is the sign that every subscriber's socket holds it (see
        # the module's docstring); so it must be listening first. Both waits are bounded.
        self._ensure_listener()
        self._wait(lambda: self.healthy)
        heard = self._heard[(topic, key)]
        self.client.publish(self.channel, f"{topic}\x00{key}")
        if self.healthy:
            self._wait(lambda: self._heard[(topic, key)] != heard or not self.healthy)

    @staticmethod
    def _wait(done: Any) -> None:
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while not done() and time.monotonic() < deadline:
            time.sleep(0.0002)

    def _bump(self, topic: str, key: str) -> None:
        with self._lock:
            self.versions[(topic, key)] += 1

    def _ensure_listener(self) -> None:
        # Lazily, and again in a forked worker: threads do not survive fork.
        if self.client is None or self._pid == current_pid():
            return
        with self._lock:
            if self._pid == current_pid():
                return
            self._pid = current_pid()
            self.healthy = False
            threading.Thread(target=_listen, args=(weakref.ref(self),), name="lunaos-invalidation",
                             daemon=True).start()

    def _poll(self, pubsub: Any, wait: float) -> None:
        """Wait up to `wait` seconds for messages and apply what arrived."""
        # The subscribe reply is still on the socket (subscribe() does not read it).
        if self._sock is not None and not select.select([self._sock], [], [], wait)[0]:
            pubsub.ping()  # notices a dead connection even when nothing is published
            return
        # Flagged before reading, cleared once applied: lookups see one or the other.
        self._handling = True
        try:
            while (message := pubsub.get_message(timeout=0 if self._sock else wait)) is not None:
                self._apply(message)
        finally:
            self._handling = False

    def _apply(self, message: dict) -> None:
        if message["type"] == "subscribe":
            # Anything published while we were away is lost: drop every cache, then trust again.
            with self._lock:
                self.generation += 1
                self.versions.clear()
                self._heard.clear()  # a publisher waiting on a count sees it move and stops waiting
            self.healthy = True
        elif message["type"] == "message":
            topic, _, key = message["data"].decode().partition("\x00")
            self._bump(topic, key)
            self._heard[(topic, key)] += 1


_POLL_SELECT: Any = None


def _poll_select() -> Any:
    """select.select as the OS provides it. gevent's patched one yields to its hub even for a
    zero timeout, so each lookup would let every other greenlet run in the middle of a request."""
    global _POLL_SELECT
    if _POLL_SELECT is None:
        found = select.select
        try:
            from gevent import monkey

            if monkey.is_module_patched("select"):
                found = monkey.get_original("select", "select")
        except ImportError:  # gevent is not installed: the standard select is the original
            pass
        _POLL_SELECT = found
    return _POLL_SELECT


def _listen(ref: weakref.ref[Invalidation]) -> None:
    """The listener thread. It holds its bus only weakly, between waits: when the app that owns
    the bus is gone (tests build many), the thread ends instead of listening, or retrying a
    dead Redis, for the rest of the process."""
    pubsub = None
    warned = False
    while (bus := ref()) is not None:
        try:
            if pubsub is None:
                pubsub = bus.client.pubsub(ignore_subscribe_messages=False)  # type: ignore[union-attr]
                pubsub.subscribe(bus.channel)
                bus._sock = getattr(pubsub.connection, "_sock", None)
            bus._poll(pubsub, 5.0)
            warned = warned and not bus.healthy
        except Exception as error:  # connection lost: distrust caches until resubscribed
            bus.healthy = False
            bus._sock = None
            _close(pubsub)
            pubsub = None
            # Once per outage, not once per retry.
            log.log(logging.DEBUG if warned else logging.WARNING,
                    "invalidation listener lost Redis (%s); retrying", type(error).__name__)
            warned = True
            del bus  # not kept alive by the wait
            time.sleep(RETRY_SECONDS)
            continue
        del bus  # the next ref() must be able to find it gone
    _close(pubsub)


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:  # noqa: BLE001 - the connection is being dropped anyway
            pass


def get(app: Flask | None = None) -> Invalidation:
    return (app or current_app._get_current_object()).extensions["lunaos.invalidation"]


def init_app(app: Flask) -> None:
    app.extensions["lunaos.invalidation"] = Invalidation(redis_client.client(app),
                                                         redis_client.key("invalidate", app))
