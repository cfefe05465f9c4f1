"""Request ids, Server-Timing, one JSON access line per request, and secrets redacted from every log line."""
from __future__ import annotations

import json
import logging
import re

import pytest
from flask import request
from tests.support.logs import capture as capture_logs

log = logging.getLogger("lunaos.test.observability")

GENERATED_ID = re.compile(r"^req_[0-9a-z]{26}$")
SERVER_TIMING = re.compile(r"(?:^|,\s*)total;dur=(\d+(?:\.\d+)?)(?:,|$)")

# Distinctive secret values: none may appear anywhere in the captured log output.
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMTIzIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r4wk"
API_KEY = "lnos_live_9f8e7d6c5b4a3f2e1d0c9b8a"
OPAQUE_BEARER = "opaqueBearerValue4242"
PASSWORD = "Hunter2-Correct-Horse"
NESTED_SECRET = "nested-client-secret-777"
QUERY_TOKEN = "querytokenvalue31337"
EXCEPTION_SECRET = "exc-secret-0451"
COOKIE = "sessioncookievalue8080"
SECRETS = [JWT, API_KEY, OPAQUE_BEARER, PASSWORD, NESTED_SECRET, QUERY_TOKEN, EXCEPTION_SECRET, COOKIE,
           JWT.split(".")[1], API_KEY.removeprefix("lnos_live_")]


@pytest.fixture
def app(make_app):
    app = make_app()

    def chatty():
        # What careless plugin code might log: headers, payloads, upstream errors.
        log.info("incoming authorization %s", request.headers.get("Authorization"))
        log.info("headers %s", dict(request.headers))
        log.info("user sent key %s and session %s", API_KEY, JWT)
        log.info("form %s", {"email": "a@example.com", "new_password": PASSWORD, "current_password": PASSWORD})
        log.info("login attempt", extra={
            "password": PASSWORD,
            "upstream": {"url": "https://api.example.com", "auth": {"client_secret": NESTED_SECRET,
                                                                   "api_key": API_KEY}},
            "credentials": [{"token": OPAQUE_BEARER}],
            "headers": {"Authorization": f"Bearer {OPAQUE_BEARER}", "Cookie": f"session={COOKIE}"},
            "tokens_used": 12,
            "status": "ok",
            "model": "offline-small",
        })
        try:
            raise ValueError(f"upstream refused token={EXCEPTION_SECRET} with Authorization: Bearer {OPAQUE_BEARER}")
        except ValueError:
            log.exception("upstream call failed")
        return {"ok": True}

    def crash():
        raise RuntimeError(f"cannot connect: postgresql://lunaos:{PASSWORD}@db/lunaos api_key={EXCEPTION_SECRET}")

    def dump_headers():
        log.info("headers %s", dict(request.headers))
        log.info("raw headers:\n%s", request.headers)
        log.info("environ %r", {k: v for k, v in request.environ.items() if k.startswith("HTTP_")})
        return {"ok": True}

    app.add_url_rule("/test-chatty", "test_chatty", chatty)
    app.add_url_rule("/test-headers", "test_headers", dump_headers)
    app.add_url_rule("/test-crash", "test_crash", crash)
    return app


@pytest.fixture
def log_stream(app):
    """The app's real handler (redaction filter + JSON formatter) writing into a buffer."""
    return capture_logs(app)


def records(stream):
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def access_lines(stream):
    return [r for r in records(stream) if r["logger"] == "lunaos.access"]


# ---- request id -------------------------------------------------------------------------------

@pytest.mark.parametrize("incoming", ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "trace:1.2_3", "X" * 128])
def test_sane_request_id_is_echoed(client, incoming):
    response = client.get("/health", headers={"X-Request-ID": incoming})
    assert response.headers["X-Request-ID"] == incoming


@pytest.mark.parametrize("incoming", ["X" * 129, "has space", "line\nbreak", "tab\there", "", "-leading-dash",
                                      "semi;colon", "<script>", "caf\u00e9"])
def test_insane_request_id_is_replaced(client, incoming):
    # Raw environ: the test client would refuse some of these as header values.
    response = client.get("/health", environ_base={"HTTP_X_REQUEST_ID": incoming})
    assert GENERATED_ID.match(response.headers["X-Request-ID"])


def test_a_fresh_id_per_request(client):
    ids = {client.get("/health").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5 and all(GENERATED_ID.match(i) for i in ids)


def test_request_id_on_errors_and_rate_limited_responses(make_app):
    client = make_app(RATELIMIT_ANONYMOUS="1/minute").test_client()
    client.get("/")
    limited = client.get("/", headers={"X-Request-ID": "limited-1"})
    assert limited.status_code == 429
    assert limited.headers["X-Request-ID"] == "limited-1"
    assert limited.get_json()["error"]["request_id"] == "limited-1"


# ---- Server-Timing ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/health", "/v1/missing", "/v1/plugins", "/test-crash"])
def test_server_timing_total(client, path):
    response = client.get(path)
    match = SERVER_TIMING.search(response.headers["Server-Timing"])
    assert match, response.headers["Server-Timing"]
    assert float(match.group(1)) >= 0


# ---- access log -------------------------------------------------------------------------------

def test_one_access_line_per_request(client, log_stream):
    responses = [client.get("/"), client.get("/health"), client.get("/v1/missing"), client.post("/health"),
                 client.get("/v1/plugins"), client.get("/test-crash")]
    lines = access_lines(log_stream)
    assert len(lines) == len(responses)
    for line, response, (method, path) in zip(lines, responses, [
            ("GET", "/"), ("GET", "/health"), ("GET", "/v1/missing"), ("POST", "/health"),
            ("GET", "/v1/plugins"), ("GET", "/test-crash")], strict=True):
        assert line["request_id"] == response.headers["X-Request-ID"]
        assert line["method"] == method
        assert line["path"] == path
        assert line["status"] == response.status_code
        assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
        assert "principal" in line and line["principal"] is None
        assert line["level"] == "INFO"
        assert line.get("time")


def test_access_line_names_the_authenticated_principal(app, client, log_stream, principal_token):
    token = principal_token(app, id="usr_observed", scopes={"*"})
    response = client.get("/v1/plugins", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    (line,) = access_lines(log_stream)
    assert line["principal"] == "usr_observed"
    assert token not in log_stream.getvalue()


def test_access_line_for_an_api_key_names_the_key(app, client, log_stream, principal_token):
    # Not an lnos_live_ string: the keys plugin, when installed, owns those.
    token = principal_token(app, token=OPAQUE_BEARER, kind="key", id="key_observed", key_id="key_observed",
                            user_id="usr_owner", scopes={"*"})
    assert client.get("/v1/plugins", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    (line,) = access_lines(log_stream)
    assert line["principal"] == "key_observed"
    assert OPAQUE_BEARER not in log_stream.getvalue()


def test_unhandled_error_is_logged_once_with_the_request_id(client, log_stream):
    response = client.get("/test-crash")
    assert response.status_code == 500
    errors = [r for r in records(log_stream) if r["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == response.headers["X-Request-ID"]
    assert len(access_lines(log_stream)) == 1


# ---- redaction ---------------------------------------------------------------------------------

def assert_no_secrets(text):
    for secret in SECRETS:
        assert secret not in text, f"secret {secret!r} leaked into the logs"


def test_secrets_in_messages_extras_and_tracebacks_are_redacted(client, log_stream):
    response = client.get("/test-chatty", headers={"Authorization": f"Bearer {OPAQUE_BEARER}",
                                                   "Cookie": f"session={COOKIE}"})
    assert response.status_code == 200
    output = log_stream.getvalue()
    assert_no_secrets(output)
    assert "[REDACTED]" in output

    by_message = {r["message"]: r for r in records(log_stream)}
    attempt = by_message["login attempt"]
    # Non-secret fields stay readable, including counters whose name mentions tokens.
    assert attempt["tokens_used"] == 12
    assert attempt["status"] == "ok"
    assert attempt["model"] == "offline-small"
    assert attempt["upstream"]["url"] == "https://api.example.com"
    assert attempt["password"] == "[REDACTED]"
    form = next(r for r in records(log_stream) if r["message"].startswith("form "))
    assert "a@example.com" in form["message"]
    failed = by_message["upstream call failed"]
    assert "ValueError" in failed["exc_info"] and "upstream refused" in failed["exc_info"]


@pytest.mark.parametrize("query", [
    f"token={QUERY_TOKEN}",
    f"access_token={QUERY_TOKEN}",
    f"page=2&api_key={QUERY_TOKEN}&sort=name",
    f"refresh_token={QUERY_TOKEN}",
    f"client_secret={QUERY_TOKEN}",
    f"jwt={JWT}",
    f"key={API_KEY}",
])
def test_secrets_in_query_strings_are_redacted(client, log_stream, query):
    client.get(f"/health?{query}")
    (line,) = access_lines(log_stream)
    assert QUERY_TOKEN not in log_stream.getvalue()
    assert_no_secrets(log_stream.getvalue())
    assert line["path"] == "/health"
    if "page=2" in query:
        assert "page=2" in line["query"] and "sort=name" in line["query"]


def test_secrets_in_the_path_are_redacted(client, log_stream):
    client.get(f"/v1/lookup/{API_KEY}")
    (line,) = access_lines(log_stream)
    assert line["path"].startswith("/v1/lookup/lnos_live_")
    assert_no_secrets(log_stream.getvalue())


def test_secrets_in_unhandled_exceptions_are_redacted(client, log_stream):
    response = client.get("/test-crash")
    assert response.status_code == 500
    output = log_stream.getvalue()
    assert "RuntimeError" in output and "cannot connect" in output
    assert_no_secrets(output)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "Basic", "Token", "Digest username=x, response="])
def test_authorization_and_cookie_headers_never_logged(client, log_stream, scheme):
    response = client.get("/test-headers", headers={"Authorization": f"{scheme} {OPAQUE_BEARER}",
                                                    "Proxy-Authorization": f"Basic {OPAQUE_BEARER}",
                                                    "Cookie": f"theme=dark; session={COOKIE}"})
    assert response.status_code == 200
    output = log_stream.getvalue()
    assert OPAQUE_BEARER not in output and COOKIE not in output
    assert "User-Agent" in output  # the dump did happen


def test_third_party_loggers_are_redacted_too(app, log_stream):
    logging.getLogger("urllib3.connectionpool").warning("retrying https://api.example.com/?api_key=%s", QUERY_TOKEN)
    logging.getLogger("some.library").error("auth failed for %s", {"Authorization": f"Bearer {OPAQUE_BEARER}"})
    assert_no_secrets(log_stream.getvalue())
    assert "retrying https://api.example.com/" in log_stream.getvalue()


def test_access_line_written_directly_matches_the_logged_one(client, log_stream):
    """In a deployment our handler is the only one listening and the line is written to its
    stream directly; it must be the very line the logging path writes."""
    root = logging.getLogger()
    others = [h for h in root.handlers if not getattr(h, "_lunaos", False)]
    assert others, "pytest's own capture handler is expected here (the logging path)"
    client.get("/v1/missing?token=abc&page=2", headers={"X-Request-ID": "via-logging"})
    for handler in others:
        root.removeHandler(handler)
    try:
        client.get("/v1/missing?token=abc&page=2", headers={"X-Request-ID": "direct"})
    finally:
        for handler in others:
            root.addHandler(handler)
    logged, direct = access_lines(log_stream)
    assert list(logged) == list(direct)  # same fields, same order
    varying = {"request_id", "duration_ms", "time"}
    assert {k: v for k, v in logged.items() if k not in varying} == {k: v for k, v in direct.items()
                                                                      if k not in varying}
    assert direct["request_id"] == "direct" and "abc" not in direct["query"]
