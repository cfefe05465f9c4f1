"""What the router knows about each provider: in-flight requests, rolling latency, circuit breaker.

`MemoryState` keeps it in this process. `RedisState` shares it between the
workers and hosts of one deployment:
- in-flight: a sorted set per provider whose members are request tickets
  scored by a lease deadline, so a process that dies mid-request stops being
  counted once its leases run out (long streams renew theirs);
- latency: an exponentially weighted moving average in one hash, updated
  atomically by a Lua script;
- breaker: consecutive failures and the end of the cool-down per provider; after
  the cool-down exactly one request (whoever wins a SET NX) probes the provider.
`SharedState` uses Redis and, while Redis fails, this process's memory, so a
Redis outage degrades routing quality rather than failing requests.

What happens after an upstream answered (the in-flight mark released, the
latency recorded, the breaker reset) need not delay the answer: those Redis
writes go to one background thread per process (`_Deferred`), in order. (A
stream's end is written at once: it comes after the text, so it delays nothing.) Reads
of this process (status, least_loaded, fastest, cool-downs) wait for it to
drain first; another process may see such a write a few milliseconds late.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from ..invalidation import Invalidation
from ..process import pid as current_pid

log = logging.getLogger("lunaos.llm")
EWMA_WEIGHT = 0.3  # weight of the newest sample: recent behaviour counts, one outlier does not dominate


@dataclass
class Ticket:
    provider: str
    member: str
    backend: str  # "memory" | "redis": where the matching `end` must go
    leased_until: float = 0.0


@dataclass
class _Breaker:
    failures: int = 0
    until: float = 0.0  # epoch seconds; 0: closed
    probe_until: float = 0.0


class MemoryState:
    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._latency: dict[str, float] = {}
        self._breakers: dict[str, _Breaker] = {}

    # in-flight
    def begin(self, provider: str, lease: float) -> Ticket:
        with self._lock:
            self._inflight[provider] = self._inflight.get(provider, 0) + 1
        return Ticket(provider, "", self.name)

    def renew(self, ticket: Ticket, lease: float) -> None:
        return None

    def end(self, ticket: Ticket) -> None:
        with self._lock:
            self._inflight[ticket.provider] = max(0, self._inflight.get(ticket.provider, 0) - 1)

    def inflight(self, providers: list[str]) -> dict[str, int]:
        with self._lock:
            return {p: self._inflight.get(p, 0) for p in providers}

    # latency
    def record_latency(self, provider: str, ms: float) -> None:
        with self._lock:
            old = self._latency.get(provider)
            self._latency[provider] = ms if old is None else old + EWMA_WEIGHT * (ms - old)

    def latency(self, providers: list[str]) -> dict[str, float | None]:
        with self._lock:
            return {p: self._latency.get(p) for p in providers}

    # circuit breaker
    def record_success(self, provider: str) -> None:
        with self._lock:
            self._breakers.pop(provider, None)

    def record_failure(self, provider: str, threshold: int, cooldown: float) -> float | None:
        """Count a failure; returns the cool-down end when this failure opened (or re-opened) the breaker."""
        with self._lock:
            breaker = self._breakers.setdefault(provider, _Breaker())
            breaker.failures += 1
            breaker.probe_until = 0.0
            if breaker.failures >= threshold:
                breaker.until = time.time() + cooldown
                return breaker.until
            return None

    def cooldowns(self, providers: list[str]) -> dict[str, float | None]:
        now = time.time()
        with self._lock:
            return {p: (b.until if (b := self._breakers.get(p)) and b.until > now else None) for p in providers}

    def admit(self, provider: str, probe_lease: float) -> str:
        """"closed": send; "probe": the one request testing a provider after its cool-down; "open": skip."""
        now = time.time()
        with self._lock:
            breaker = self._breakers.get(provider)
            if breaker is None or breaker.until == 0.0:
                return "closed"
            if breaker.until > now or breaker.probe_until > now:
                return "open"
            breaker.probe_until = now + probe_lease
            return "probe"

    # combined steps: what the router does per attempt (one Redis round trip each in RedisState)
    def enter(self, provider: str, lease: float, probe_lease: float) -> tuple[str, Ticket | None]:
        verdict = self.admit(provider, probe_lease)
        return verdict, (None if verdict == "open" else self.begin(provider, lease))

    def succeeded(self, provider: str, ms: float, at: float | None = None) -> None:
        # `at` matters where writes can arrive late from other processes (RedisState); here they are in order.
        self.record_latency(provider, ms)
        self.record_success(provider)

    def complete(self, ticket: Ticket, ms: float, at: float | None = None) -> None:
        self.end(ticket)
        self.succeeded(ticket.provider, ms)

    def reset(self) -> None:
        with self._lock:
            self._inflight.clear()
            self._latency.clear()
            self._breakers.clear()


_EWMA = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local value = tonumber(ARGV[2])
if old then value = tonumber(old) + tonumber(ARGV[3]) * (value - tonumber(old)) end
redis.call('HSET', KEYS[1], ARGV[1], tostring(value))
return tostring(value)
"""

# KEYS: breaker hash, probe key. ARGV: threshold, cooldown seconds, now.
_FAILURE = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'failed_at', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], 86400)
if failures >= tonumber(ARGV[1]) then
  local untilts = tonumber(ARGV[3]) + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'until', tostring(untilts))
  return tostring(untilts)
end
return false
"""


# KEYS: breaker hash, probe key, in-flight set. ARGV: now, member, lease deadline, probe ms, process.
_ENTER = """
local untilts = redis.call('HGET', KEYS[1], 'until')
local verdict = 'closed'
if untilts then
  if tonumber(untilts) > tonumber(ARGV[1]) then return 'open' end
  if not redis.call('SET', KEYS[2], ARGV[5], 'NX', 'PX', ARGV[4]) then return 'open' end
  verdict = 'probe'
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return verdict
"""


# A call that succeeded: its in-flight mark off (when it has one), the latency into the moving
# average, the breaker closed, unless a failure was recorded after this answer came: the
# success is written off the request path, so it can arrive after another process's newer
# failure opened the breaker. KEYS: in-flight set, latency hash, breaker hash, probe key.
# ARGV: member or "", provider, ms, weight, time of the answer.
_SUCCESS = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local old = redis.call('HGET', KEYS[2], ARGV[2])
local value = tonumber(ARGV[3])
if old then value = tonumber(old) + tonumber(ARGV[4]) * (value - tonumber(old)) end
redis.call('HSET', KEYS[2], ARGV[2], tostring(value))
local failed = redis.call('HGET', KEYS[3], 'failed_at')
if not failed or tonumber(failed) < tonumber(ARGV[5]) then redis.call('DEL', KEYS[3], KEYS[4]) end
return 1
"""


@dataclass
class RedisState:
    client: Redis
    prefix: str  # e.g. "lunaos:llm:"
    process: str = field(default_factory=lambda: f"{os.uname().nodename}:{current_pid()}:{uuid.uuid4().hex[:8]}")
    name: str = "redis"

    def __post_init__(self) -> None:
        self._ewma = self.client.register_script(_EWMA)
        self._failure = self.client.register_script(_FAILURE)
        self._enter = self.client.register_script(_ENTER)
        self._success = self.client.register_script(_SUCCESS)
        self._sweep_at = 0.0

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def ticket(self, provider: str, lease: float) -> Ticket:
        return Ticket(provider, f"{self.process}:{uuid.uuid4().hex[:12]}", self.name, time.time() + lease)

    def mark(self, ticket: Ticket) -> None:
        self.client.zadd(self._k("inflight", ticket.provider), {ticket.member: ticket.leased_until})

    def begin(self, provider: str, lease: float) -> Ticket:
        ticket = self.ticket(provider, lease)
        self.mark(ticket)
        return ticket

    def renew(self, ticket: Ticket, lease: float) -> None:
        # Only when half the lease is gone: a long stream costs a write every lease/2, not every token.
        now = time.time()
        if ticket.leased_until - now < lease / 2:
            ticket.leased_until = now + lease
            self.client.zadd(self._k("inflight", ticket.provider), {ticket.member: ticket.leased_until}, xx=True)

    def end(self, ticket: Ticket) -> None:
        self.client.zrem(self._k("inflight", ticket.provider), ticket.member)

    def inflight(self, providers: list[str]) -> dict[str, int]:
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        sweep = now - self._sweep_at > 30
        for p in providers:
            if sweep:  # leases of dead processes: drop them so the sets do not grow
                pipe.zremrangebyscore(self._k("inflight", p), "-inf", now)
            pipe.zcount(self._k("inflight", p), now, "+inf")
        results = pipe.execute()
        if sweep:
            self._sweep_at = now
            results = results[1::2]
        return {p: int(n) for p, n in zip(providers, results, strict=True)}

    def record_latency(self, provider: str, ms: float) -> None:
        self._ewma(keys=[self._k("latency")], args=[provider, f"{ms:.3f}", EWMA_WEIGHT])

    def latency(self, providers: list[str]) -> dict[str, float | None]:
        values = self.client.hmget(self._k("latency"), providers) if providers else []
        return {p: (float(v) if v is not None else None) for p, v in zip(providers, values, strict=True)}

    def record_success(self, provider: str) -> None:
        # Most requests succeed on a closed breaker: skip the writes when there is nothing to reset.
        if self.client.exists(self._k("breaker", provider)):
            self.client.delete(self._k("breaker", provider), self._k("probe", provider))

    def record_failure(self, provider: str, threshold: int, cooldown: float) -> float | None:
        result = self._failure(keys=[self._k("breaker", provider), self._k("probe", provider)],
                               args=[threshold, cooldown, f"{time.time():.6f}"])
        return float(result) if result is not None else None

    def _untils(self, providers: list[str]) -> dict[str, float]:
        pipe = self.client.pipeline(transaction=False)
        for p in providers:
            pipe.hget(self._k("breaker", p), "until")
        return {p: float(v) if v is not None else 0.0 for p, v in zip(providers, pipe.execute(), strict=True)}

    def cooldowns(self, providers: list[str]) -> dict[str, float | None]:
        now = time.time()
        return {p: (u if u > now else None) for p, u in self._untils(providers).items()}

    def admit(self, provider: str, probe_lease: float) -> str:
        until = self._untils([provider])[provider]
        if until == 0.0:
            return "closed"
        if until > time.time():
            return "open"
        won = self.client.set(self._k("probe", provider), self.process, nx=True, px=max(1, int(probe_lease * 1000)))
        return "probe" if won else "open"

    # combined steps: one round trip before the upstream call and one after
    def enter(self, provider: str, lease: float, probe_lease: float) -> tuple[str, Ticket | None]:
        now = time.time()
        ticket = Ticket(provider, f"{self.process}:{uuid.uuid4().hex[:12]}", self.name, now + lease)
        verdict = self._enter(
            keys=[self._k("breaker", provider), self._k("probe", provider), self._k("inflight", provider)],
            args=[f"{now:.3f}", ticket.member, f"{ticket.leased_until:.3f}", max(1, int(probe_lease * 1000)),
                  self.process])
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        return verdict, (None if verdict == "open" else ticket)

    def _succeeded(self, provider: str, ms: float, at: float | None, member: str = "") -> None:
        # One script call: a registered script in a pipeline would first ask SCRIPT EXISTS each time.
        self._success(keys=[self._k("inflight", provider), self._k("latency"), self._k("breaker", provider),
                            self._k("probe", provider)],
                      args=[member, provider, f"{ms:.3f}", EWMA_WEIGHT, f"{at or time.time():.6f}"])

    def succeeded(self, provider: str, ms: float, at: float | None = None) -> None:
        self._succeeded(provider, ms, at)

    def complete(self, ticket: Ticket, ms: float, at: float | None = None) -> None:
        self._succeeded(ticket.provider, ms, at, ticket.member)

    def reset(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=500))
        if keys:
            self.client.delete(*keys)


class _Deferred:
    """Calls run in order on one daemon thread of this process (a greenlet under gevent)."""

    DRAIN_SECONDS = 1.0  # longest a read waits for the writes before it

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        self._ensure().put((call, args))

    def _ensure(self) -> queue.Queue:
        if self._queue is None or self._pid != current_pid():  # threads do not survive a fork
            with self._lock:
                if self._queue is None or self._pid != current_pid():
                    work: queue.Queue = queue.Queue()
                    threading.Thread(target=_run_deferred, args=(work,), name="lunaos-llm-state",
                                     daemon=True).start()
                    weakref.finalize(self, work.put, None)  # the thread ends with its owner
                    self._queue, self._pid = work, current_pid()
        return self._queue

    def drain(self) -> None:
        work = self._queue if self._pid == current_pid() else None
        if work is None or not work.unfinished_tasks:
            return
        deadline = time.monotonic() + self.DRAIN_SECONDS
        while work.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.0005)


def _run_deferred(work: queue.Queue) -> None:
    while (item := work.get()) is not None:
        call, args = item
        try:
            call(*args)
        except Exception:  # noqa: BLE001 - bookkeeping; the methods handle Redis failures themselves
            log.exception("llm state: deferred %s failed", getattr(call, "__name__", call))
        finally:
            work.task_done()


class SharedState:
    """Redis when it answers, this process's memory while it does not (retried after a pause)."""

    RETRY_AFTER = 5.0

    BREAKER_TOPIC = "llm.breaker"

    def __init__(self, redis_state: RedisState | None, bus: Invalidation | None = None):
        self.memory = MemoryState()
        self.redis = redis_state
        self.bus = bus if redis_state is not None else None
        self._down_until = 0.0
        self._deferred = _Deferred()
        self._own: tuple[int, RedisState] | None = None  # (pid, state) of the deferred writes
        self._probed: set[str] = set()  # providers this process probed since their cool-down
        # provider -> the bus version under which Redis last said its breaker was closed
        self._closed: dict[str, str] = {}

    @property
    def backend(self) -> str:
        return "redis" if self._use_redis() else "memory"

    def _use_redis(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._down_until

    def _call(self, method: str, *args: Any, default: Any = None) -> Any:
        if self._use_redis():
            try:
                return getattr(self.redis, method)(*args)
            except (RedisError, OSError) as error:
                self._redis_failed(error)
        return getattr(self.memory, method)(*args)

    def _redis_failed(self, error: Exception) -> None:
        self._down_until = time.monotonic() + self.RETRY_AFTER
        log.warning("llm state: Redis failed (%s: %s); using this process's state for %.0fs",
                    type(error).__name__, error, self.RETRY_AFTER)

    def begin(self, provider: str, lease: float) -> Ticket:
        return self._call("begin", provider, lease)

    def renew(self, ticket: Ticket, lease: float) -> None:
        if ticket.backend == "redis" and self.redis is not None:
            try:
                self.redis.renew(ticket, lease)
            except (RedisError, OSError):
                pass  # the lease runs out; the count is then a little low, never stuck high

    def end(self, ticket: Ticket) -> None:
        # Back to where it was counted, whatever the state of Redis now.
        if ticket.backend == "memory":
            self.memory.end(ticket)
            return
        # The ticket's mark may still be queued (see enter): removing it first would let the
        # mark land afterwards and count a finished request until its lease ran out.
        self._deferred.drain()
        try:
            assert self.redis is not None
            self.redis.end(ticket)
        except (RedisError, OSError):
            pass  # its lease expires

    def inflight(self, providers: list[str]) -> dict[str, int]:
        self._deferred.drain()
        counts = self._call("inflight", providers)
        if self.redis is not None and self.backend == "redis":
            # Requests this process started during an outage are only in memory.
            local = self.memory.inflight(providers)
            counts = {p: counts[p] + local[p] for p in providers}
        return counts

    def record_latency(self, provider: str, ms: float) -> None:
        self._call("record_latency", provider, ms)

    def latency(self, providers: list[str]) -> dict[str, float | None]:
        self._deferred.drain()
        return self._call("latency", providers)

    # Breaker changes apply in order: a failure after a success still waiting to be written
    # must not be wiped by that success's reset.
    def record_success(self, provider: str) -> None:
        self._deferred.drain()
        self._call("record_success", provider)

    def record_failure(self, provider: str, threshold: int, cooldown: float) -> float | None:
        self._deferred.drain()
        self._closed.pop(provider, None)
        opened = self._call("record_failure", provider, threshold, cooldown)
        if opened is not None and self.bus is not None:
            try:
                self.bus.publish(self.BREAKER_TOPIC, provider)  # every process checks Redis again
            except (RedisError, OSError):
                pass  # their listeners are down too, so they check Redis anyway
        return opened

    def cooldowns(self, providers: list[str]) -> dict[str, float | None]:
        self._deferred.drain()
        return self._call("cooldowns", providers)

    def admit(self, provider: str, probe_lease: float) -> str:
        return self._call("admit", provider, probe_lease)

    def enter(self, provider: str, lease: float, probe_lease: float) -> tuple[str, Ticket | None]:
        """The breaker's verdict and, unless "open", an in-flight ticket.

        While the invalidation bus is connected, a breaker Redis said was closed stays closed
        until a bus message says it opened: the verdict is then known here and the in-flight
        mark is written off the request path, so a request to a healthy provider makes no
        round trip before its upstream call. Otherwise one round trip checks and marks at once.
        """
        if provider in self._probed:
            # A probe of this provider ended here: its breaker reset may still be queued.
            self._deferred.drain()
            self._probed.discard(provider)
        version = None
        if self.bus is not None and self._use_redis() and self.bus.healthy:
            version = self.bus.version(self.BREAKER_TOPIC, provider)
            if self._closed.get(provider) == version:
                assert self.redis is not None
                ticket = self.redis.ticket(provider, lease)
                self._deferred.submit(self._mark, ticket)
                return "closed", ticket
        verdict, ticket = self._call("enter", provider, lease, probe_lease)
        if verdict == "closed" and version is not None and ticket is not None and ticket.backend == "redis":
            self._closed[provider] = version  # read before Redis: an opening meanwhile moves it on
        else:
            self._closed.pop(provider, None)
        if verdict == "probe":
            self._probed.add(provider)
        return verdict, ticket

    def _background(self) -> RedisState:
        """The deferred writes' state, on one connection of this process's own.

        They run one at a time, so they need no pool: through it each command cost a checkout,
        a liveness poll of the socket and a release, about a third of its CPU.
        """
        assert self.redis is not None
        if self._own is None or self._own[0] != current_pid():
            client = Redis(connection_pool=self.redis.client.connection_pool, single_connection_client=True)
            self._own = current_pid(), dataclasses.replace(self.redis, client=client)
        return self._own[1]

    def _mark(self, ticket: Ticket) -> None:
        try:
            self._background().mark(ticket)
        except (RedisError, OSError):
            pass  # not counted in flight elsewhere; its `end` finds nothing to remove

    def succeeded(self, provider: str, ms: float) -> None:
        """Off the request path when Redis is in use (see _Deferred), stamped with the answer's time."""
        if self._use_redis():
            self._deferred.submit(self._succeeded_redis, provider, ms, time.time())
        else:
            self._call("succeeded", provider, ms)

    def _succeeded_redis(self, provider: str, ms: float, at: float) -> None:
        try:
            self._background().succeeded(provider, ms, at)
        except (RedisError, OSError) as error:
            self._redis_failed(error)
            self.memory.succeeded(provider, ms)

    def complete(self, ticket: Ticket, ms: float) -> None:
        if ticket.backend == "memory":
            self.memory.end(ticket)
            self.succeeded(ticket.provider, ms)
            return
        self._deferred.submit(self._complete_redis, ticket, ms, time.time())

    def _complete_redis(self, ticket: Ticket, ms: float, at: float) -> None:
        try:
            self._background().complete(ticket, ms, at)
        except (RedisError, OSError) as error:
            self._redis_failed(error)
            self.memory.succeeded(ticket.provider, ms)  # the ticket's Redis mark expires with its lease

    def reset(self) -> None:
        self._deferred.drain()
        self.memory.reset()
        if self.redis is not None:
            try:
                self.redis.reset()
            except (RedisError, OSError):
                pass
