"""Cross-process cache invalidation over Redis pub/sub.

Processes cache what every request needs (a user's authorisation state, a
verified API key). A change publishes `topic:key` on one channel; every
process's listener bumps a local version for that key, so the next lookup
there reloads. Callers compare `version(topic, key)` with the version they
cached under.

"Next request" holds within a process too: a message reaches every subscriber's
socket before PUBLISH returns to the writer, so `version()` first checks (one
non-blocking poll) whether the listener has unread or half-handled messages and
waits briefly for it to catch up, rather than answer from a cache that a change
already in flight is about to invalidate.

Messages are fire-and-forget: a listener that loses its connection may have
missed some. So `healthy` is false from the moment the connection drops until
it is back and every version has been moved on (all caches dropped); callers
must not trust their caches while it is false, and check the source instead.
Without Redis there is no listener: `healthy` is always false.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections import defaultdict

from flask import Flask, current_app
from redis import Redis

from . import redis_client

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
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed under us: the listener is reconnecting
            return False

    def publish(self, topic: str, key: str) -> None:
        """Tell every process (this one at once) that `key` of `topic` changed."""
        self._bump(topic, key)
        if self.client is not None:
            self.client.publish(self.channel, f"{topic}\x00{key}")

    def _bump(self, topic: str, key: str) -> None:
        with self._lock:
            self.versions[(topic, key)] += 1

    def _ensure_listener(self) -> None:
        # Lazily, and again in a forked worker: threads do not survive fork.
        if self.client is None or self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.healthy = False
            threading.Thread(target=self._listen, name="lunaos-invalidation", daemon=True).start()

    def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=False)  # type: ignore[union-attr]
            try:
                pubsub.subscribe(self.channel)
                self._sock = getattr(pubsub.connection, "_sock", None)
                while True:
                    # The subscribe reply is still on the socket (subscribe() does not read it).
                    if self._sock is not None and not select.select([self._sock], [], [], 5.0)[0]:
                        pubsub.ping()  # notices a dead connection even when nothing is published
                        continue
                    # Flagged before reading, cleared once applied: lookups see one or the other.
                    self._handling = True
                    try:
                        while (message := pubsub.get_message(timeout=0 if self._sock else 5.0)) is not None:
                            self._apply(message)
                    finally:
                        self._handling = False
            except Exception as error:  # connection lost: distrust caches until resubscribed
                self.healthy = False
                self._sock = None
                log.warning("invalidation listener lost Redis (%s); retrying", type(error).__name__)
                time.sleep(RETRY_SECONDS)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass


    def _apply(self, message: dict) -> None:
        if message["type"] == "subscribe":
            # Anything published while we were away is lost: drop every cache, then trust again.
            with self._lock:
                self.generation += 1
                self.versions.clear()
            self.healthy = True
        elif message["type"] == "message":
            topic, _, key = message["data"].decode().partition("\x00")
            self._bump(topic, key)


def get(app: Flask | None = None) -> Invalidation:
    return (app or current_app).extensions["lunaos.invalidation"]


def init_app(app: Flask) -> None:
    app.extensions["lunaos.invalidation"] = Invalidation(redis_client.client(app),
                                                         redis_client.key("invalidate", app))
