"""Rate limits per principal, headers, and the 429 envelope.

One budget per caller across every route: the caller's tier limit
(`RATELIMIT_TIERS`), a key's own `rate_limit` when set, else
`RATELIMIT_ANONYMOUS` per client IP. Plugins add groups with an extra limit
(the AI routes on the free tier): `register_group(app, "ai", provider)` and
`@limit_group("ai")`.

Counting is done by `limits`, the library flask-limiter is built on: the same
storages (`memory://`, or Redis when `REDIS_URL` is set, shared by every
worker and host) and strategies (`RATELIMIT_STRATEGY`). flask-limiter itself
is not used: its generic per-request limit resolution measured about 200 us
per request (a bare Flask request is about 230 us in the same harness)
against about 20 us for the same check made directly.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, has_app_context, request
from flask.wrappers import Response
from limits import RateLimitItem, parse
from limits.storage import SCHEMES, MemoryStorage, RedisStorage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter

from .errors import RateLimited
from .headers import append_trusted, has_header
from .security import Principal, current_principal
from .process import pid as current_pid

GroupProvider = Callable[[Principal], "str | None"]
log = logging.getLogger("lunaos.ratelimit")
STORAGE_RETRY_SECONDS = 5.0


@dataclass
class _Window:
    limit: int
    remaining: int
    reset_at: int


# INCRBY + EXPIRE on a new window (as limits' own script), and the window's TTL in the same trip.
_INCR_WITH_TTL = """
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if current == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""


class _OneTripRedisStorage(RedisStorage):
    """limits' RedisStorage, one round trip per fixed-window check instead of three.

    A fixed-window hit is `incr`, then `get` and `get_expiry` of the same counter
    for the X-RateLimit-* headers: three round trips, each a wait for Redis (and,
    on a busy host, for a CPU to run it). Here `incr` also returns the TTL, and
    `get`/`get_expiry` answer from what this request's own `incr` saw: the count
    right after its hit, which is what the headers report. Any other caller (no
    request, or a key this request did not increment) still reads Redis.
    """

    STORAGE_SCHEME = ["lunaos+redis", "lunaos+rediss", "lunaos+redis+unix"]

    def __init__(self, uri: str, **options):  # type: ignore[no-untyped-def]
        super().__init__(uri.removeprefix("lunaos+"), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self._incr_with_ttl = self.get_connection().register_script(_INCR_WITH_TTL)

    @staticmethod
    def _seen() -> dict[str, tuple[int, float]] | None:
        return g.setdefault("_lunaos_rate_seen", {}) if has_app_context() else None

    def incr_with_ttl(self, key: str, expiry: int, amount: int = 1) -> tuple[int, int]:
        """(count after adding `amount`, seconds left in the window): one round trip."""
        count, ttl = self._incr_with_ttl([self.prefixed_key(key)], [expiry, amount])
        return int(count), max(int(ttl), 0)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count, ttl = self.incr_with_ttl(key, expiry, amount)
        seen = self._seen()
        if seen is not None:
            seen[key] = (count, ttl + time.time())
        return count

    def get(self, key: str) -> int:
        known = (self._seen() or {}).get(key)
        return known[0] if known else super().get(key)

    def get_expiry(self, key: str) -> float:
        known = (self._seen() or {}).get(key)
        return known[1] if known else super().get_expiry(key)

    def clear(self, key: str) -> None:
        (self._seen() or {}).pop(key, None)
        super().clear(key)


def _storage_uri(uri: str) -> str:
    """Plain Redis URLs use the one-round-trip storage; anything else is left to limits."""
    scheme = uri.partition("://")[0]
    return f"lunaos+{uri}" if scheme in ("redis", "rediss", "redis+unix") else uri


def principal_key(principal: Principal | None = None) -> str:
    principal = principal or current_principal()
    if principal.key_id:
        return f"key:{principal.key_id}"
    if principal.user_id:
        return f"user:{principal.user_id}"
    return f"ip:{request._get_current_object().remote_addr or 'unknown'}"


def principal_limit(principal: Principal | None = None) -> str:
    principal = principal or current_principal()
    config = current_app._get_current_object().config
    if principal.rate_limit:
        return principal.rate_limit
    if principal.authenticated:
        tiers = config["RATELIMIT_TIERS"]
        return tiers.get(principal.tier or "free") or tiers.get("free") or config["RATELIMIT_ANONYMOUS"]
    return config["RATELIMIT_ANONYMOUS"]


def exempt(view: Callable) -> Callable:
    """Mark a view as never rate limited (health checks, docs assets)."""
    view._lunaos_rate_exempt = True  # type: ignore[attr-defined]
    return view


def limit_group(name: str) -> Callable[[Callable], Callable]:
    """Mark a view as part of a limit group registered with `register_group`."""

    def decorator(view: Callable) -> Callable:
        view._lunaos_limit_group = name  # type: ignore[attr-defined]
        return view

    return decorator


def register_group(app: Flask, name: str, provider: GroupProvider) -> None:
    """`provider(principal)` returns an extra limit string for the group, or None."""
    budgets(app).groups[name] = provider


def parse_many(value: str) -> list[RateLimitItem]:
    return [parse(part.strip()) for part in value.split(";") if part.strip()]


@dataclass
class _Lease:
    left: int  # admissions this process may still make without asking Redis
    count: int  # the shared counter right after this lease was taken
    reset_at: float  # epoch seconds: the window's end


class Budgets:
    """The per-request check: one strategy call per limit, one Redis round trip with
    `_OneTripRedisStorage`. If the storage fails, limits keep applying per process
    (in memory) and the storage is tried again after STORAGE_RETRY_SECONDS.

    Leases (fixed window on Redis): a round trip to Redis costs about as much CPU as
    the rest of a small request, so a process takes RATELIMIT_LEASE of a limit at a
    time (one INCRBY, at most MAX_SHARE) and admits from it locally. The shared budget is
    never exceeded; at most each process's unused share goes unadmitted when a window
    ends. Limits whose share would be under 2 (every small limit: the anonymous 60 per
    minute, the free tier) are counted request by request.
    """

    MAX_LEASES = 100_000
    MAX_SHARE = 100  # at least one round trip per 100 admissions per process

    def __init__(self, app: Flask, make_storage: Callable[[], Any], prefix: str, leasable: bool) -> None:
        self.app = app
        self._make_storage = make_storage
        self._kind = STRATEGIES[app.config["RATELIMIT_STRATEGY"]]
        self._strategies: tuple[int, RateLimiter, RateLimiter] | None = None  # (pid, configured, fallback)
        leasable = leasable and app.config["RATELIMIT_STRATEGY"] == "fixed-window"
        self.lease_fraction = float(app.config["RATELIMIT_LEASE"]) if leasable else 0.0
        self.leases: OrderedDict[str, _Lease] = OrderedDict()
        self.lease_lock = threading.Lock()
        self.prefix = prefix
        self.groups: dict[str, GroupProvider] = {}
        self.dead_until = 0.0
        self._plans: dict[tuple[str | None, str], tuple[bool, str | None]] = {}
        self._parsed: dict[str, list[RateLimitItem]] = {}
        self._counters: dict[tuple[int, tuple[str, ...]], tuple[RateLimitItem, str, int]] = {}

    def _open(self) -> tuple[int, RateLimiter, RateLimiter]:
        # Made in the serving process: limits' memory storage starts a timer thread when it is
        # created, which must not be made in gunicorn's master and inherited by forked workers.
        found = self._strategies
        if found is None or found[0] != current_pid():
            with self.lease_lock:
                found = self._strategies
                if found is None or found[0] != current_pid():
                    found = (current_pid(), self._kind(self._make_storage()), self._kind(MemoryStorage()))
                    self._strategies = found
        return found

    @property
    def strategy(self) -> RateLimiter:
        return self._open()[1]

    @property
    def fallback(self) -> RateLimiter:
        return self._open()[2]

    def plan(self) -> tuple[bool, str | None]:
        """(exempt, group) of the view serving this request, worked out once per endpoint and method."""
        req = request._get_current_object()
        key = (req.endpoint, req.method)
        found = self._plans.get(key)
        if found is None:
            found = (request.method == "OPTIONS" or request.endpoint is None
                     or bool(_view_attr("_lunaos_rate_exempt")), _view_attr("_lunaos_limit_group"))
            self._plans[key] = found
        return found

    def items(self, value: str) -> list[RateLimitItem]:
        items = self._parsed.get(value)
        if items is None:
            if len(self._parsed) > 10_000:  # per-key limits are few; bound it anyway
                self._parsed.clear()
            items = self._parsed[value] = parse_many(value)
        return items

    def hit(self, value: str, *identifiers: str) -> tuple[_Window, RateLimitItem | None]:
        """Count this request against every limit in `value`; (tightest window, breached limit)."""
        tightest: _Window | None = None
        for item in self.items(value):
            allowed, window = self._hit(item, identifiers)
            if tightest is None or window.remaining < tightest.remaining:
                tightest = window
            if not allowed:
                return window, item
        assert tightest is not None
        return tightest, None

    def _counter(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> tuple[str, int]:
        """(storage key, lease share) of a limit for these identifiers, worked out once: limits'
        `key_for` joins and checks every part again on each call."""
        entry = self._counters.get((id(item), identifiers))
        if entry is not None and entry[0] is item:  # the id of a parsed item dropped since may be reused
            return entry[1], entry[2]
        counter = item.key_for(self.prefix, *identifiers)
        share = min(int(item.amount * self.lease_fraction), self.MAX_SHARE)
        if len(self._counters) >= self.MAX_LEASES:
            self._counters.clear()
        self._counters[(id(item), identifiers)] = (item, counter, share)
        return counter, share

    def _leased(self, item: RateLimitItem, counter: str, share: int, now: float) -> tuple[bool, _Window]:
        with self.lease_lock:
            lease = self.leases.get(counter)
            if lease is not None and lease.left > 0 and now < lease.reset_at:
                lease.left -= 1
                return True, self._window(item, lease)
        count, ttl = self.strategy.storage.incr_with_ttl(counter, item.get_expiry(), share)  # type: ignore[union-attr]
        available = max(min(share, item.amount - (count - share)), 0)  # what was left for us of `share`
        lease = _Lease(left=available - 1 if available else 0, count=count, reset_at=now + ttl)
        with self.lease_lock:
            self.leases[counter] = lease
            self.leases.move_to_end(counter)
            while len(self.leases) > self.MAX_LEASES:
                self.leases.popitem(last=False)
        return available > 0, self._window(item, lease)

    @staticmethod
    def _window(item: RateLimitItem, lease: _Lease) -> _Window:
        # The shared count as of this process's last lease (others' later leases are not
        # seen until the next one): X-RateLimit-Remaining is approximate by their shares.
        return _Window(item.amount, max(item.amount - lease.count, 0) + lease.left, int(lease.reset_at))

    def current(self) -> RateLimiter:
        """The strategy to use now: the configured storage's, or the in-memory fallback while it is down."""
        return self.strategy if time.monotonic() >= self.dead_until else self.fallback

    def run(self, operation: Callable[[RateLimiter], Any]) -> Any:
        """`operation(strategy)` on the live storage, or in memory when it fails (for other counters
        kept on the limiter's storage, such as failed logins)."""
        strategy = self.current()
        if strategy is self.fallback:
            return operation(strategy)
        try:
            return operation(strategy)
        except Exception as error:
            self.mark_dead(error)
            return operation(self.fallback)

    def mark_dead(self, error: Exception) -> None:
        self.dead_until = time.monotonic() + STORAGE_RETRY_SECONDS
        log.warning("rate-limit storage unreachable (%s); limiting in memory for %ss",
                    type(error).__name__, STORAGE_RETRY_SECONDS)

    def _hit(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> tuple[bool, _Window]:
        counter, share = self._counter(item, identifiers)
        alive = time.monotonic() >= self.dead_until
        if share >= 2 and alive:
            try:
                return self._leased(item, counter, share, time.time())
            except Exception as error:
                self.mark_dead(error)
                alive = False
        key = (self.prefix, *identifiers)
        if alive:
            try:
                return self._stats(self.strategy, item, key)
            except Exception as error:  # Redis unreachable: degrade to per-process limits, never to 500s
                self.mark_dead(error)
        return self._stats(self.fallback, item, key)

    @staticmethod
    def _stats(strategy: RateLimiter, item: RateLimitItem, key: tuple[str, ...]) -> tuple[bool, _Window]:
        allowed = strategy.hit(item, *key)
        stats = strategy.get_window_stats(item, *key)
        return allowed, _Window(item.amount, max(stats.remaining, 0), int(stats.reset_time))


def budgets(app: Flask | None = None) -> Budgets:
    return (app or current_app._get_current_object()).extensions["lunaos.budgets"]


def _view_attr(name: str) -> object:
    """A marker set on the view function, or on the MethodView method serving this request."""
    view = current_app.view_functions.get(request.endpoint or "")
    value = getattr(view, name, None)
    if value is None and getattr(view, "view_class", None) is not None:
        value = getattr(getattr(view.view_class, request.method.lower(), None), name, None)
    return value


def _check() -> None:
    state = budgets()
    exempted, group = state.plan()
    if exempted:
        return
    principal = current_principal()
    key = principal_key(principal)
    window, breached = state.hit(principal_limit(principal), key)
    breached_group = None
    if breached is None and group is not None:
        provider = state.groups.get(group)
        extra = provider(principal) if provider else None
        if extra:
            # A group's budget belongs to the account, so more keys do not buy more of it.
            owner = f"user:{principal.user_id}" if principal.user_id else key
            group_window, breached = state.hit(extra, owner, f"group:{group}")
            breached_group = group if breached is not None else None
            if breached is not None or group_window.remaining < window.remaining:
                window = group_window  # the headers describe the tighter of the two budgets
    g._get_current_object().rate_window = window
    if breached is not None:
        where = f" for {breached_group} requests" if breached_group else ""
        details = {"limit": str(breached), **({"group": breached_group} if breached_group else {})}
        raise RateLimited(window.reset_at - int(time.time()) + 1, f"Rate limit exceeded{where} ({breached}).",
                          details=details)


def _inject_headers(response: Response) -> Response:
    window: _Window | None = g._get_current_object().get("rate_window")
    if window is not None:
        values = (("X-RateLimit-Limit", str(window.limit)), ("X-RateLimit-Remaining", str(window.remaining)),
                  ("X-RateLimit-Reset", str(window.reset_at)))
        headers = response.headers
        if has_header(headers, "x-ratelimit-limit"):  # a view's own (rare): replace
            for name, value in values:
                headers[name] = value
        else:
            append_trusted(headers, values)  # numbers: nothing to check
    return response


def init_app(app: Flask) -> None:
    config = app.config
    if config["RATELIMIT_STRATEGY"] not in STRATEGIES:
        from .config import ConfigError

        raise ConfigError(f"LUNAOS_RATELIMIT_STRATEGY: one of {', '.join(sorted(STRATEGIES))}")
    options = {"socket_timeout": 2, "socket_connect_timeout": 2} if config.get("REDIS_URL") else {}
    uri = _storage_uri(config["RATELIMIT_STORAGE_URI"])
    if uri.partition("://")[0] not in SCHEMES:  # stop start-up here, not at the first request
        from .config import ConfigError

        raise ConfigError(f"LUNAOS_RATELIMIT_STORAGE_URI: no rate-limit storage for {uri.partition(':')[0]!r}")
    app.extensions["lunaos.budgets"] = Budgets(app, lambda: storage_from_string(uri, **options),
                                               config["REDIS_KEY_PREFIX"] + "rl", uri.startswith("lunaos+"))
    if config["RATELIMIT_ENABLED"]:
        app.before_request(_check)
        app.after_request(_inject_headers)
