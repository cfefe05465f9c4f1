"""Rate limits: per IP for anonymous callers, per principal by tier or own limit, groups, shared in Redis."""
from __future__ import annotations

import time

import pytest
from flask.views import MethodView

from app import openapi, ratelimit
from app.http import Blueprint

LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

blp = Blueprint("ratelimit_test", __name__, url_prefix="/v1/ratelimit-test")


@blp.route("/plain")
class Plain(MethodView):
    def get(self):
        return {"data": "plain"}


@blp.route("/expensive")
class Expensive(MethodView):
    @ratelimit.limit_group("expensive")
    def get(self):
        return {"data": "expensive"}


def free_tier_only(principal):
    # The AI-route pattern: a stricter extra budget on the free tier, none for paying tiers.
    return "2/minute" if (principal.tier or "free") == "free" else None


def build(make_app, **overrides):
    app = make_app(**overrides)
    openapi.register_blueprint(app, blp)
    ratelimit.register_group(app, "expensive", free_tier_only)
    return app


@pytest.fixture
def app(make_app):
    return build(make_app)


def hit(client, path="/", n=1, **kwargs):
    return [client.get(path, **kwargs) for _ in range(n)][-1]


def assert_429(response, limit_text=None):
    assert response.status_code == 429, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "RATE_LIMIT_EXCEEDED"
    assert error["request_id"] == response.headers["X-Request-ID"]
    retry_after = int(response.headers["Retry-After"])
    assert error["details"]["retry_after"] == retry_after
    assert 1 <= retry_after <= 61
    if limit_text:
        assert error["details"]["limit"] == limit_text
    return error


def test_anonymous_default_is_60_per_minute_per_ip(client):
    responses = [client.get("/") for _ in range(60)]
    assert all(r.status_code == 200 for r in responses)
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in responses[:3]] == [59, 58, 57]
    assert responses[-1].headers["X-RateLimit-Remaining"] == "0"
    assert_429(client.get("/"), "60 per 1 minute")
    # The budget is per client IP: another address is unaffected.
    assert client.get("/", environ_base={"REMOTE_ADDR": "192.0.2.77"}).status_code == 200


def test_budget_is_shared_across_routes(client):
    hit(client, "/", 30)
    hit(client, "/openapi.json", 20)
    response = hit(client, "/v1/plugins", 10)  # 401s count too: a failing credential is no free pass
    assert response.status_code == 401
    assert_429(client.get("/"))


def test_limit_headers_on_limited_routes(client):
    before = time.time()
    response = client.get("/")
    assert response.headers["X-RateLimit-Limit"] == "60"
    assert response.headers["X-RateLimit-Remaining"] == "59"
    reset = int(response.headers["X-RateLimit-Reset"])
    # Epoch seconds (not a delta): when the current one-minute window ends.
    assert before - 1 <= reset <= time.time() + 61
    limited = hit(client, "/", 60)
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Limit"] == "60"
    # A fixed window: the reset time stays put (give or take the rounding of a second).
    assert abs(int(limited.headers["X-RateLimit-Reset"]) - reset) <= 1


def test_health_is_never_limited_and_has_no_limit_headers(make_app):
    client = make_app(RATELIMIT_ANONYMOUS="2/minute").test_client()
    assert_429(hit(client, "/", 3))
    for _ in range(20):
        response = client.get("/health")
        assert response.status_code == 200
        for name in (*LIMIT_HEADERS, "Retry-After"):
            assert name not in response.headers


def test_docs_assets_are_not_limited(make_app):
    client = make_app(RATELIMIT_ANONYMOUS="1/minute").test_client()
    client.get("/")
    for _ in range(3):
        assert client.get("/docs").status_code == 200
        assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200


def test_preflight_is_not_limited(make_app):
    client = make_app(RATELIMIT_ANONYMOUS="1/minute").test_client()
    client.get("/")
    for _ in range(3):
        response = client.options("/v1/plugins", headers={"Origin": "http://localhost:1420",
                                                          "Access-Control-Request-Method": "GET"})
        assert response.status_code == 200


def test_configurable_anonymous_limit(make_app):
    client = make_app(RATELIMIT_ANONYMOUS="5/minute").test_client()
    response = hit(client, "/", 5)
    assert response.status_code == 200 and response.headers["X-RateLimit-Limit"] == "5"
    assert_429(client.get("/"), "5 per 1 minute")


@pytest.mark.parametrize("tier, expected", [("free", "60"), ("pro", "600"), ("team", "6000"), (None, "60")])
def test_authenticated_limit_follows_the_tier(app, client, principal_token, tier, expected):
    token = principal_token(app, tier=tier)
    response = client.get("/v1/plugins", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == expected
    assert response.headers["X-RateLimit-Remaining"] == str(int(expected) - 1)


def test_pro_tier_outlasts_the_anonymous_budget(make_app, principal_token):
    app = build(make_app, RATELIMIT_ANONYMOUS="3/minute",
                RATELIMIT_TIERS={"free": "3/minute", "pro": "8/minute", "team": "20/minute"})
    client = app.test_client()
    token = principal_token(app, id="usr_pro", tier="pro")
    auth = {"Authorization": f"Bearer {token}"}
    assert_429(hit(client, "/", 4))  # this IP's anonymous budget is gone...
    responses = [client.get("/", headers=auth) for _ in range(8)]
    assert all(r.status_code == 200 for r in responses)  # ...the pro user has their own
    assert responses[0].headers["X-RateLimit-Limit"] == "8"
    assert_429(client.get("/", headers=auth), "8 per 1 minute")


def test_principal_rate_limit_overrides_the_tier(app, client, principal_token):
    token = principal_token(app, kind="key", id="key_capped", key_id="key_capped", user_id="usr_1",
                            tier="team", rate_limit="3/minute")
    auth = {"Authorization": f"Bearer {token}"}
    response = hit(client, "/", 3, headers=auth)
    assert response.status_code == 200 and response.headers["X-RateLimit-Limit"] == "3"
    assert_429(client.get("/", headers=auth), "3 per 1 minute")


def test_each_principal_has_its_own_budget(app, client, principal_token):
    first = principal_token(app, token="first", id="usr_first", rate_limit="2/minute")
    second = principal_token(app, token="second", id="usr_second", rate_limit="2/minute")
    assert_429(hit(client, "/", 3, headers={"Authorization": f"Bearer {first}"}))
    assert client.get("/", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_two_keys_of_one_user_have_separate_budgets(app, client, principal_token):
    one = principal_token(app, token="k1", kind="key", id="key_1", key_id="key_1", user_id="usr_same",
                          rate_limit="2/minute")
    two = principal_token(app, token="k2", kind="key", id="key_2", key_id="key_2", user_id="usr_same",
                          rate_limit="2/minute")
    assert_429(hit(client, "/", 3, headers={"Authorization": f"Bearer {one}"}))
    assert client.get("/", headers={"Authorization": f"Bearer {two}"}).status_code == 200


def test_group_limit_is_stricter_for_the_free_tier(app, client, principal_token):
    token = principal_token(app, tier="free")
    auth = {"Authorization": f"Bearer {token}"}
    first = client.get("/v1/ratelimit-test/expensive", headers=auth)
    assert first.status_code == 200
    # The tighter of the two budgets is the one reported.
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert client.get("/v1/ratelimit-test/expensive", headers=auth).status_code == 200
    error = assert_429(client.get("/v1/ratelimit-test/expensive", headers=auth))
    assert error["details"]["group"] == "expensive"
    # Routes outside the group still have the tier budget.
    plain = client.get("/v1/ratelimit-test/plain", headers=auth)
    assert plain.status_code == 200
    assert plain.headers["X-RateLimit-Limit"] == "60"


def test_group_limit_does_not_apply_where_the_provider_says_none(app, client, principal_token):
    token = principal_token(app, tier="pro")
    auth = {"Authorization": f"Bearer {token}"}
    responses = [client.get("/v1/ratelimit-test/expensive", headers=auth) for _ in range(5)]
    assert all(r.status_code == 200 for r in responses)
    assert responses[-1].headers["X-RateLimit-Limit"] == "600"


def test_group_limit_applies_to_anonymous_callers(client):
    hit(client, "/v1/ratelimit-test/expensive", 2)
    assert_429(client.get("/v1/ratelimit-test/expensive"))


def test_disabled_limiter_sends_no_headers(make_app):
    client = make_app(RATELIMIT_ENABLED=False, RATELIMIT_ANONYMOUS="1/minute").test_client()
    responses = [client.get("/") for _ in range(3)]
    assert all(r.status_code == 200 and "X-RateLimit-Limit" not in r.headers for r in responses)


# ---- Redis -----------------------------------------------------------------------------------------

def test_limiter_state_lives_in_redis(make_app, redis_url, redis_client, worker):
    app = build(make_app, REDIS_URL=redis_url, RATELIMIT_ANONYMOUS="5/minute")
    client = app.test_client()
    hit(client, "/", 3)
    keys = [k.decode() for k in redis_client.scan_iter(match=f"*{worker}*rl*")]
    assert keys, "no limiter keys in Redis"
    counters = [int(redis_client.get(k)) for k in keys if redis_client.type(k) == b"string"]
    assert 3 in counters


def test_two_apps_sharing_redis_share_one_budget(make_app, redis_url, redis_client):
    first = build(make_app, REDIS_URL=redis_url, RATELIMIT_ANONYMOUS="5/minute").test_client()
    second = build(make_app, REDIS_URL=redis_url, RATELIMIT_ANONYMOUS="5/minute").test_client()
    assert hit(first, "/", 3).headers["X-RateLimit-Remaining"] == "2"
    # Another worker or host: it sees the first one's count.
    response = second.get("/")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "1"
    assert second.get("/").status_code == 200
    assert_429(second.get("/"))
    assert_429(first.get("/"))


def test_principal_and_group_budgets_are_shared_through_redis(make_app, redis_url, redis_client, principal_token):
    first_app = build(make_app, REDIS_URL=redis_url)
    second_app = build(make_app, REDIS_URL=redis_url)
    auth = {"Authorization": f"Bearer {principal_token(first_app, id='usr_shared', tier='free')}"}
    principal_token(second_app, id="usr_shared", tier="free")
    assert first_app.test_client().get("/v1/ratelimit-test/expensive", headers=auth).status_code == 200
    second = second_app.test_client()
    assert second.get("/v1/ratelimit-test/expensive", headers=auth).status_code == 200
    assert assert_429(second.get("/v1/ratelimit-test/expensive", headers=auth))["details"]["group"] == "expensive"


def test_unreachable_redis_falls_back_to_limiting_in_memory(make_app):
    # Port 1: connection refused at once. Requests are still served and still limited.
    client = make_app(REDIS_URL="redis://127.0.0.1:1/0", RATELIMIT_ANONYMOUS="2/minute").test_client()
    assert [client.get("/").status_code for _ in range(2)] == [200, 200]
    assert_429(client.get("/"))


def test_leased_budget_shared_by_two_apps_is_never_exceeded(make_app, redis_url, redis_client):
    # 400/minute with 5% leases: each app takes 20 admissions per round trip to Redis.
    apps = [build(make_app, REDIS_URL=redis_url, RATELIMIT_ANONYMOUS="400/minute", RATELIMIT_LEASE=0.05)
            for _ in range(2)]
    clients = [a.test_client() for a in apps]
    own = [0, 0]
    for i in range(500):
        response = clients[i % 2].get("/")
        if response.status_code == 200:
            own[i % 2] += 1
            # A worker knows the shared count as of its last lease: what it reports left never
            # exceeds the limit minus its own admissions (others' recent leases it cannot see).
            assert int(response.headers["X-RateLimit-Remaining"]) <= 400 - own[i % 2]
        else:
            assert_429(response)
    # Never more than the shared budget; at most one unused lease per app goes unadmitted.
    assert 400 - 2 * 20 <= sum(own) <= 400


def test_lease_takes_one_round_trip_per_share(make_app, redis_url, redis_client, worker):
    app = build(make_app, REDIS_URL=redis_url, RATELIMIT_ANONYMOUS="1000/minute", RATELIMIT_LEASE=0.05)
    client = app.test_client()
    for _ in range(120):
        assert client.get("/").status_code == 200
    counters = [int(redis_client.get(k)) for k in redis_client.scan_iter(match=f"*{worker}*rl*")
                if redis_client.type(k) == b"string"]
    # 120 admissions in shares of 50: the shared counter moved in three steps.
    assert counters == [150]


def test_small_limits_are_counted_request_by_request(make_app, redis_url, redis_client):
    # 60/minute at 1% would be a share under 2: exact, as the two-app test above requires.
    first = build(make_app, REDIS_URL=redis_url, RATELIMIT_ANONYMOUS="3/minute").test_client()
    second = build(make_app, REDIS_URL=redis_url, RATELIMIT_ANONYMOUS="3/minute").test_client()
    assert [first.get("/").status_code, second.get("/").status_code, first.get("/").status_code] == [200] * 3
    assert_429(second.get("/"))
