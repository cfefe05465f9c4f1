"""Login failure throttling per account and per client IP, on the limiter's storage.

Failures are counted, successes are not, so a user logging in correctly is
never slowed by someone else hammering another account. The per-IP budget is
larger than the per-account one: it stops password spraying across many
accounts without locking out an office behind one NAT address.
"""
from __future__ import annotations

import time

from flask import current_app
from limits import parse

from app.errors import RateLimited
from app.ratelimit import budgets


def _buckets(email: str, ip: str) -> list[tuple[str, tuple[str, ...]]]:
    config = current_app.config
    prefix = config["REDIS_KEY_PREFIX"] + "auth-fail"
    return [
        (config["AUTH_LOGIN_FAILURES_PER_ACCOUNT"], (prefix, "account", email)),
        (config["AUTH_LOGIN_FAILURES_PER_IP"], (prefix, "ip", ip)),
    ]


def check(email: str, ip: str) -> None:
    """429 before any password work when either budget is spent."""
    for limit, key in _buckets(email, ip):
        item = parse(limit)
        spent, reset = budgets().run(
            lambda s, item=item, key=key: (not s.test(item, *key), s.get_window_stats(item, *key).reset_time))
        if spent:
            raise RateLimited(int(reset - time.time()) + 1, "Too many failed logins; try again later.",
                              code="LOGIN_THROTTLED")


def failed(email: str, ip: str) -> None:
    for limit, key in _buckets(email, ip):
        budgets().run(lambda s, item=parse(limit), key=key: s.hit(item, *key))


def succeeded(email: str) -> None:
    limit, key = _buckets(email, "-")[0]
    budgets().run(lambda s: s.clear(parse(limit), *key))
