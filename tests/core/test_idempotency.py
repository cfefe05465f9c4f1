"""Idempotency-Key on POST: replay, conflicts, scopes, what is stored, on the table and on Redis."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from flask import Response, current_app
from flask.views import MethodView

from app import idempotency, openapi
from app.http import Blueprint
from tests.support.identity import bearer, create_key, error_of, execute, rows, signup

pytestmark = pytest.mark.db

blp = Blueprint("idempotency_test", __name__, url_prefix="/v1/idempotency-test")


def _calls() -> Counter:
    return current_app.extensions["idempotency_test.calls"]


@blp.route("/count")
class Count(MethodView):
    def post(self):
        _calls()["count"] += 1
        return {"data": {"calls": _calls()["count"]}}, 201


@blp.route("/flaky")
class Flaky(MethodView):
    def post(self):
        _calls()["flaky"] += 1
        if _calls()["flaky"] == 1:
            raise RuntimeError("the first attempt fails")
        return {"data": {"calls": _calls()["flaky"]}}, 201


@blp.route("/slow")
class Slow(MethodView):
    def post(self):
        # The first call waits for the test's signal; later ones answer at once.
        gate = current_app.extensions["idempotency_test.gate"]
        _calls()["slow"] += 1
        calls = _calls()["slow"]
        if calls == 1:
            gate["entered"].set()
            assert gate["release"].wait(30)
        return {"data": {"calls": calls}}, 201


@blp.route("/stream")
class Stream(MethodView):
    def post(self):
        _calls()["stream"] += 1
        n = _calls()["stream"]
        return Response((f"data: {n}\n\n" for _ in range(2)), mimetype="text/event-stream")


@blp.route("/exempt")
class Exempt(MethodView):
    @idempotency.exempt
    def post(self):
        _calls()["exempt"] += 1
        return {"data": {"calls": _calls()["exempt"]}}, 201


@blp.route("/big")
class Big(MethodView):
    def post(self):
        _calls()["big"] += 1
        return {"data": {"calls": _calls()["big"], "padding": "x" * 2000}}, 201


@pytest.fixture
def store(request):
    """Where answers are kept: "table" (no Redis configured) unless a test is run on both."""
    return getattr(request, "param", "table")


on_both_stores = pytest.mark.parametrize("store", ["table", "redis"], indirect=True)


@pytest.fixture
def build(make_app, store, request):
    def factory(**overrides):
        if store == "redis":
            overrides["REDIS_URL"] = request.getfixturevalue("redis_url")
            request.getfixturevalue("redis_client")  # removes this worker's keys before and after
        app = make_app(**overrides)
        openapi.register_blueprint(app, blp)
        app.extensions["idempotency_test.calls"] = Counter()
        app.extensions["idempotency_test.gate"] = {"entered": threading.Event(), "release": threading.Event()}
        return app

    return factory


@pytest.fixture
def app(build):
    return build()


@pytest.fixture
def client(app):
    return app.test_client()


def key(value: str = "retry-me-1") -> dict[str, str]:
    return {"Idempotency-Key": value}


def replayed(response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


@on_both_stores
def test_a_retry_replays_the_first_answer_and_creates_nothing(client):
    alice = signup(client, "alice@example.com")
    body = {"name": "deploy", "scopes": ["keys:read"]}
    first = client.post("/v1/api-keys", json=body, headers={**bearer(alice), **key()})
    assert first.status_code == 201 and not replayed(first)
    again = client.post("/v1/api-keys", json=body, headers={**bearer(alice), **key()})
    assert again.status_code == 201 and replayed(again)
    # The same bytes, the one secret shown once; fresh per-request headers.
    assert again.get_data() == first.get_data()
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert again.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    listed = client.get("/v1/api-keys", headers=bearer(alice)).get_json()
    assert listed["pagination"]["total"] == 1
    # Without the header, the same request creates a second key.
    assert client.post("/v1/api-keys", json=body, headers=bearer(alice)).status_code == 201
    assert client.get("/v1/api-keys", headers=bearer(alice)).get_json()["pagination"]["total"] == 2


@on_both_stores
def test_same_key_with_another_request_is_409_reused(client):
    alice = signup(client, "alice@example.com")
    headers = {**bearer(alice), **key()}
    assert client.post("/v1/api-keys", json={"name": "a", "scopes": ["keys:read"]}, headers=headers).status_code == 201
    error = error_of(client.post("/v1/api-keys", json={"name": "b", "scopes": ["keys:read"]}, headers=headers),
                     409, "IDEMPOTENCY_KEY_REUSED")
    assert error["details"] == {"header": "Idempotency-Key"}
    # The query string is part of the request too.
    error_of(client.post("/v1/api-keys?x=1", json={"name": "a", "scopes": ["keys:read"]}, headers=headers),
             409, "IDEMPOTENCY_KEY_REUSED")
    assert client.get("/v1/api-keys", headers=bearer(alice)).get_json()["pagination"]["total"] == 1


@on_both_stores
def test_keys_belong_to_one_credential_and_one_route(client):
    alice = signup(client, "alice@example.com")
    bob = signup(client, "bob@example.com")
    alices_key = create_key(client, alice, scopes=["keys:read", "keys:write"])["key"]
    body = {"name": "ci", "scopes": ["keys:read"]}
    first = client.post("/v1/api-keys", json=body, headers={**bearer(alice), **key()})
    # Another user, or the same user through an API key, with the same key: independent requests.
    for credential in (bob, alices_key):
        other = client.post("/v1/api-keys", json=body, headers={**bearer(credential), **key()})
        assert other.status_code == 201 and not replayed(other)
        assert other.get_json()["data"]["key"] != first.get_json()["data"]["key"]
    # The same key on another route is another key.
    count = client.post("/v1/idempotency-test/count", json=body, headers={**bearer(alice), **key()})
    assert count.status_code == 201 and not replayed(count)
    assert client.get("/v1/api-keys", headers=bearer(bob)).get_json()["pagination"]["total"] == 1


@on_both_stores
def test_anonymous_signup_is_replayed_to_the_same_address_only(client):
    body = {"email": "ada@example.com", "password": "Moon-Landing-1969"}
    first = client.post("/v1/auth/signup", json=body, headers=key("signup-1"))
    assert first.status_code == 201
    again = client.post("/v1/auth/signup", json=body, headers=key("signup-1"))
    assert replayed(again) and again.get_data() == first.get_data()  # not 409 EMAIL_TAKEN
    elsewhere = client.post("/v1/auth/signup", json=body, headers=key("signup-1"),
                            environ_base={"REMOTE_ADDR": "192.0.2.10"})
    error_of(elsewhere, 409, "EMAIL_TAKEN")


@on_both_stores
def test_refusals_are_stored_but_server_errors_are_not(client, app):
    alice = signup(client, "alice@example.com")
    invalid = {"name": "", "scopes": ["no-such:scope"]}
    refused = client.post("/v1/api-keys", json=invalid, headers={**bearer(alice), **key()})
    assert refused.status_code == 422 and not replayed(refused)
    again = client.post("/v1/api-keys", json=invalid, headers={**bearer(alice), **key()})
    assert again.status_code == 422 and replayed(again) and again.get_data() == refused.get_data()

    failed = client.post("/v1/idempotency-test/flaky", headers=key())
    error_of(failed, 500, "INTERNAL_ERROR")
    retried = client.post("/v1/idempotency-test/flaky", headers=key())
    assert retried.status_code == 201 and not replayed(retried)
    assert retried.get_json()["data"] == {"calls": 2}
    third = client.post("/v1/idempotency-test/flaky", headers=key())
    assert replayed(third) and third.get_json()["data"] == {"calls": 2}
    assert app.extensions["idempotency_test.calls"]["flaky"] == 2


@on_both_stores
def test_an_expired_answer_runs_again(client, app, store, request):
    first = client.post("/v1/idempotency-test/count", headers=key())
    assert replayed(client.post("/v1/idempotency-test/count", headers=key()))
    if store == "table":
        (row,) = rows(app, "idempotency_records")
        assert row["status"] == 201
        # The record is kept IDEMPOTENCY_TTL seconds; move its expiry into the past.
        execute(app, "UPDATE idempotency_records SET expires_at = '2000-01-01 00:00:00'")
    else:
        redis = request.getfixturevalue("redis_client")
        (name,) = list(redis.scan_iter(match=app.config["REDIS_KEY_PREFIX"] + "idem:*"))
        assert 86_000 < redis.ttl(name) <= 86_400  # Redis drops it after IDEMPOTENCY_TTL
        redis.delete(name)
    again = client.post("/v1/idempotency-test/count", headers=key())
    assert again.status_code == 201 and not replayed(again)
    assert (first.get_json()["data"], again.get_json()["data"]) == ({"calls": 1}, {"calls": 2})
    assert replayed(client.post("/v1/idempotency-test/count", headers=key()))


@on_both_stores
def test_a_retry_while_the_first_request_runs_is_409_in_use(app):
    gate = app.extensions["idempotency_test.gate"]
    results = {}

    def first_request():
        results["first"] = app.test_client().post("/v1/idempotency-test/slow", json={"n": 1}, headers=key())

    thread = threading.Thread(target=first_request)
    thread.start()
    try:
        assert gate["entered"].wait(30)
        client = app.test_client()
        busy = client.post("/v1/idempotency-test/slow", json={"n": 1}, headers=key())
        error = error_of(busy, 409, "IDEMPOTENCY_KEY_IN_USE")
        assert busy.headers["Retry-After"] == "1" and error["details"]["retry_after"] == 1
        error_of(client.post("/v1/idempotency-test/slow", json={"n": 2}, headers=key()), 409, "IDEMPOTENCY_KEY_REUSED")
    finally:
        gate["release"].set()
        thread.join(30)
    assert results["first"].status_code == 201
    after = app.test_client().post("/v1/idempotency-test/slow", json={"n": 1}, headers=key())
    assert replayed(after) and after.get_data() == results["first"].get_data()
    assert app.extensions["idempotency_test.calls"]["slow"] == 1


@on_both_stores
def test_a_claim_whose_request_died_lapses(app, store, request):
    """A worker killed mid-request never releases its claim: after IDEMPOTENCY_LOCK_SECONDS a retry runs."""
    gate = app.extensions["idempotency_test.gate"]
    results = {}

    def first_request():
        results["first"] = app.test_client().post("/v1/idempotency-test/slow", headers=key())

    thread = threading.Thread(target=first_request)
    thread.start()
    try:
        assert gate["entered"].wait(30)
        if store == "table":
            execute(app, "UPDATE idempotency_records SET locked_until = '2000-01-01 00:00:00'")
        else:  # what Redis does when the claim's PX runs out
            redis = request.getfixturevalue("redis_client")
            (name,) = list(redis.scan_iter(match=app.config["REDIS_KEY_PREFIX"] + "idem:*"))
            assert 0 < redis.pttl(name) <= 300_000  # claimed for IDEMPOTENCY_LOCK_SECONDS
            redis.delete(name)
        retry = app.test_client().post("/v1/idempotency-test/slow", headers=key())
        assert retry.status_code == 201 and not replayed(retry)
    finally:
        gate["release"].set()
        thread.join(30)
    # The presumed-dead request finished after all: its answer does not replace the retry's.
    assert results["first"].get_json()["data"] == {"calls": 1}
    again = app.test_client().post("/v1/idempotency-test/slow", headers=key())
    assert replayed(again) and again.get_data() == retry.get_data()


def test_expired_records_are_purged(build):
    first = build()
    first.test_client().post("/v1/idempotency-test/count", headers=key("old"))
    execute(first, "UPDATE idempotency_records SET expires_at = '2000-01-01 00:00:00'")
    # A process purges on its first claim, then at most every PURGE_INTERVAL seconds.
    second = build()
    second.test_client().post("/v1/idempotency-test/count", headers=key("new"))
    assert [row["status"] for row in rows(second, "idempotency_records")] == [201]


@on_both_stores
def test_streams_exempt_routes_and_large_answers_run_every_time(build):
    app = build(IDEMPOTENCY_MAX_RESPONSE_BYTES=1000)
    client = app.test_client()
    for path in ("/v1/idempotency-test/stream", "/v1/idempotency-test/exempt", "/v1/idempotency-test/big"):
        answers = [client.post(path, headers=key()) for _ in range(2)]
        assert [a.status_code for a in answers] == [200 if path.endswith("stream") else 201] * 2, path
        assert not any(replayed(a) for a in answers), path
    assert app.extensions["idempotency_test.calls"] == Counter(stream=2, exempt=2, big=2)
    # A small answer on the same app is stored.
    client.post("/v1/idempotency-test/count", headers=key())
    assert replayed(client.post("/v1/idempotency-test/count", headers=key()))


@pytest.mark.parametrize("value", ["", "x" * 256, "tab\there", "caf\u00e9", "bell\x07"])
def test_a_malformed_key_is_400(client, value):
    error = error_of(client.post("/v1/idempotency-test/count", headers={"Idempotency-Key": value}),
                     400, "INVALID_REQUEST")
    assert "Idempotency-Key" in error["message"]
    assert current_calls(client) == 0


def current_calls(client) -> int:
    return client.application.extensions["idempotency_test.calls"]["count"]


def test_longest_and_widest_keys_are_accepted(client):
    for value in ("k" * 255, "~ !\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`{|}"):
        assert client.post("/v1/idempotency-test/count", headers=key(value)).status_code == 201
        assert replayed(client.post("/v1/idempotency-test/count", headers=key(value)))


def test_get_ignores_the_header(client):
    alice = signup(client, "alice@example.com")
    for value in ("retry-me-1", "caf\u00e9"):  # even a malformed one
        responses = [client.get("/v1/api-keys", headers={**bearer(alice), **key(value)}) for _ in range(2)]
        assert [r.status_code for r in responses] == [200, 200]
        assert not any(replayed(r) for r in responses)


@on_both_stores
def test_stored_answers_and_keys_are_not_readable_at_rest(client, app, store, request):
    alice = signup(client, "alice@example.com")
    created = client.post("/v1/api-keys", json={"name": "x", "scopes": ["keys:read"]},
                          headers={**bearer(alice), **key("my-visible-key")})
    secret = created.get_json()["data"]["key"].encode()
    if store == "table":
        stored = [b"|".join(str(v).encode() if not isinstance(v, bytes) else v for v in row.values())
                  for row in rows(app, "idempotency_records")]
    else:
        redis = request.getfixturevalue("redis_client")
        names = list(redis.scan_iter(match=app.config["REDIS_KEY_PREFIX"] + "idem:*"))
        stored = [name + b"|" + redis.get(name) for name in names]
    assert len(stored) == 1
    assert secret not in stored[0] and b"my-visible-key" not in stored[0]
    assert alice["user"]["id"].encode() not in stored[0]


def test_openapi_documents_the_header_on_every_post(client):
    spec = client.get("/openapi.json").get_json()
    keys_post = spec["paths"]["/v1/api-keys"]["post"]
    (param,) = [p for p in keys_post["parameters"] if p["name"] == "Idempotency-Key"]
    assert param["in"] == "header" and param["required"] is False
    assert "IDEMPOTENCY_KEY_REUSED" in keys_post["responses"]["409"]["description"]
    assert not any(p.get("name") == "Idempotency-Key" for p in spec["paths"]["/v1/api-keys"]["get"]
                   .get("parameters", []))
    assert not any(p.get("name") == "Idempotency-Key"
                   for p in spec["paths"]["/v1/idempotency-test/exempt"]["post"].get("parameters", []))
    posts = [op for ops in spec["paths"].values() for method, op in ops.items() if method == "post"]
    documented = [op for op in posts if any(p.get("name") == "Idempotency-Key" for p in op.get("parameters", []))]
    assert len(documented) == len(posts) - 1  # all but the exempt test route
