"""Brute force and password spraying: failed logins are throttled per account and per client IP."""
from __future__ import annotations

import pytest

from tests.support.identity import OTHER_PASSWORD, PASSWORD, error_of, login, login_ok, signup

pytestmark = pytest.mark.db

ATTACKER = {"REMOTE_ADDR": "203.0.113.66"}
OFFICE = {"REMOTE_ADDR": "198.51.100.7"}


def from_ip(environ):
    return {"environ_base": environ}


def assert_throttled(response):
    error = error_of(response, 429, "LOGIN_THROTTLED")
    retry_after = int(response.headers["Retry-After"])
    assert error["details"]["retry_after"] == retry_after
    assert 1 <= retry_after <= 15 * 60 + 1
    return error


@pytest.fixture
def app(make_app):
    return make_app(AUTH_LOGIN_FAILURES_PER_ACCOUNT="3/15 minutes", AUTH_LOGIN_FAILURES_PER_IP="6/15 minutes")


def test_repeated_failures_lock_the_account_even_for_the_right_password(client):
    signup(client, "victim@example.com")
    for _ in range(3):
        error_of(login(client, "victim@example.com", OTHER_PASSWORD, **from_ip(ATTACKER)), 401,
                 "INVALID_CREDENTIALS")
    assert_throttled(login(client, "victim@example.com", OTHER_PASSWORD, **from_ip(ATTACKER)))
    # The right password does not get through while the budget is spent, from any address:
    # the attacker cannot learn that a guess was right.
    assert_throttled(login(client, "victim@example.com", PASSWORD, **from_ip(ATTACKER)))
    assert_throttled(login(client, "victim@example.com", PASSWORD, **from_ip(OFFICE)))


def test_the_account_throttle_does_not_depend_on_email_spelling(client):
    signup(client, "victim@example.com")
    for spelling in ("victim@example.com", "VICTIM@example.com", " Victim@Example.com "):
        error_of(login(client, spelling, OTHER_PASSWORD), 401, "INVALID_CREDENTIALS")
    assert_throttled(login(client, "victim@EXAMPLE.com", PASSWORD))


def test_another_user_is_not_slowed_by_someone_elses_failures(client):
    signup(client, "victim@example.com")
    signup(client, "bystander@example.com")
    for _ in range(3):
        login(client, "victim@example.com", OTHER_PASSWORD, **from_ip(ATTACKER))
    assert_throttled(login(client, "victim@example.com", PASSWORD, **from_ip(ATTACKER)))
    # Same IP as the attacker and another IP: both log in at once.
    login_ok(client, "bystander@example.com", **from_ip(ATTACKER))
    login_ok(client, "bystander@example.com", **from_ip(OFFICE))


def test_a_success_resets_the_accounts_failure_count(client):
    signup(client, "forgetful@example.com")
    for _ in range(2):
        login(client, "forgetful@example.com", OTHER_PASSWORD)
    login_ok(client, "forgetful@example.com")
    for _ in range(2):
        error_of(login(client, "forgetful@example.com", OTHER_PASSWORD), 401, "INVALID_CREDENTIALS")
    login_ok(client, "forgetful@example.com")


def test_password_spraying_from_one_ip_is_blocked(client):
    signup(client, "real-user@example.com")
    # One guess per account, never reaching any account's own limit.
    for n in range(6):
        error_of(login(client, f"target{n}@example.com", "Summer-2026!", **from_ip(ATTACKER)), 401,
                 "INVALID_CREDENTIALS")
    assert_throttled(login(client, "target99@example.com", "Summer-2026!", **from_ip(ATTACKER)))
    # Even a real account's right password is refused from that address ...
    assert_throttled(login(client, "real-user@example.com", PASSWORD, **from_ip(ATTACKER)))
    # ... while the same account logs in from elsewhere.
    login_ok(client, "real-user@example.com", **from_ip(OFFICE))


def test_throttled_logins_are_refused_before_any_password_check(client, monkeypatch):
    from plugins.auth import passwords

    signup(client, "victim@example.com")
    for _ in range(3):
        login(client, "victim@example.com", OTHER_PASSWORD)
    calls = []
    original = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda *a: calls.append(a) or original(*a))
    assert_throttled(login(client, "victim@example.com", PASSWORD))
    assert calls == []


def test_with_redis_two_apps_share_the_budget(make_app, redis_url, redis_client, worker):
    settings = dict(REDIS_URL=redis_url, AUTH_LOGIN_FAILURES_PER_ACCOUNT="3/15 minutes",
                    AUTH_LOGIN_FAILURES_PER_IP="6/15 minutes")
    one, two = make_app(**settings).test_client(), make_app(**settings).test_client()
    signup(one, "victim@example.com")
    signup(one, "bystander@example.com")
    for client in (one, two, one):
        error_of(login(client, "victim@example.com", OTHER_PASSWORD, **from_ip(ATTACKER)), 401,
                 "INVALID_CREDENTIALS")
    assert_throttled(login(two, "victim@example.com", PASSWORD, **from_ip(OFFICE)))
    assert_throttled(login(one, "victim@example.com", PASSWORD, **from_ip(OFFICE)))
    login_ok(two, "bystander@example.com", **from_ip(ATTACKER))
    # Per-IP spraying spread over both apps is counted once.
    for n in range(3):
        login((one, two)[n % 2], f"target{n}@example.com", "Summer-2026!", **from_ip(ATTACKER))
    assert_throttled(login(two, "target42@example.com", "Summer-2026!", **from_ip(ATTACKER)))
    # The throttle lives in Redis under this deployment's prefix.
    assert list(redis_client.scan_iter(match=f"*lunaos-test-{worker}:auth-fail*"))
