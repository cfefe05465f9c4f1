"""Security headers (flask-talisman + cross-origin isolation), HTTPS handling and CORS."""
from __future__ import annotations

import pytest

HSTS = "max-age=31536000; includeSubDomains; preload"
DESKTOP_ORIGINS = ["http://localhost:1420", "http://tauri.localhost", "tauri://localhost"]
FIXED_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def csp_directives(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    directives = {}
    for part in policy.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.fixture
def app(make_app):
    app = make_app(RATELIMIT_ANONYMOUS="3/minute")

    def crash():
        raise RuntimeError("boom")

    app.add_url_rule("/test-crash", "test_crash", crash)
    return app


def _responses(client):
    """One response of each kind: success, plain, client errors, server error, rate limited, preflight."""
    yield "root", client.get("/")
    yield "health", client.get("/health")
    yield "404", client.get("/v1/missing")
    yield "405", client.delete("/health")
    yield "401", client.get("/v1/plugins")
    yield "500", client.get("/test-crash")
    yield "429", client.get("/")  # the 3/minute budget is spent by the requests above
    yield "preflight", client.options("/v1/plugins", headers={"Origin": "http://localhost:1420",
                                                              "Access-Control-Request-Method": "GET"})
    yield "docs", client.get("/docs")
    yield "openapi", client.get("/openapi.json", environ_base={"REMOTE_ADDR": "10.9.9.9"})


def test_security_headers_on_every_response(client):
    seen = set()
    for kind, response in _responses(client):
        seen.add(response.status_code)
        for name, value in FIXED_HEADERS.items():
            assert response.headers.get(name) == value, (kind, name)
        assert response.headers.get("Referrer-Policy") in ("no-referrer", "strict-origin-when-cross-origin",
                                                           "same-origin", "strict-origin"), kind
        assert csp_directives(response)["default-src"] == ["'self'"], kind
        # Plain HTTP: HSTS would be ignored by browsers and must not be sent.
        assert "Strict-Transport-Security" not in response.headers, kind
    assert {200, 401, 404, 405, 429, 500} <= seen


def test_api_csp_forbids_framing_and_inline_code(client):
    directives = csp_directives(client.get("/health"))
    assert directives["frame-ancestors"] == ["'none'"]
    for values in directives.values():
        assert "'unsafe-inline'" not in values and "'unsafe-eval'" not in values


def test_docs_csp_allows_no_foreign_or_inline_script(client):
    directives = csp_directives(client.get("/docs"))
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    scripts = directives.get("script-src", directives["default-src"])
    assert scripts == ["'self'"]
    for values in directives.values():
        assert not any(v.startswith(("http:", "https:")) or "://" in v or v == "*" for v in values)


def test_hsts_over_https(client):
    response = client.get("/health", base_url="https://api.example.test")
    assert response.headers["Strict-Transport-Security"] == HSTS
    error = client.get("/v1/missing", base_url="https://api.example.test")
    assert error.headers["Strict-Transport-Security"] == HSTS


def test_no_hsts_over_plain_http(client):
    assert "Strict-Transport-Security" not in client.get("/health").headers


def test_hsts_behind_a_trusted_proxy(make_app):
    client = make_app(PROXY_FIX=1).test_client()
    response = client.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert response.headers["Strict-Transport-Security"] == HSTS
    plain = client.get("/health", headers={"X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in plain.headers


def test_forwarded_proto_is_not_trusted_without_proxy_fix(make_app):
    client = make_app(PROXY_FIX=0).test_client()
    response = client.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in response.headers


def test_force_https_redirects_plain_http(make_app):
    client = make_app(FORCE_HTTPS=True).test_client()
    response = client.get("/v1/plugins?page=2")
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["Location"] == "https://localhost/v1/plugins?page=2"
    # Already HTTPS: served normally.
    assert client.get("/health", base_url="https://localhost").status_code == 200


def test_force_https_behind_a_trusted_proxy(make_app):
    client = make_app(FORCE_HTTPS=True, PROXY_FIX=1).test_client()
    assert client.get("/health", headers={"X-Forwarded-Proto": "https"}).status_code == 200
    response = client.get("/health", headers={"X-Forwarded-Proto": "http"})
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["Location"].startswith("https://")


def test_force_https_cannot_be_bypassed_with_a_forged_header(make_app):
    client = make_app(FORCE_HTTPS=True, PROXY_FIX=0).test_client()
    response = client.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code in (301, 302, 307, 308)


@pytest.mark.parametrize("origin", DESKTOP_ORIGINS)
def test_cors_allows_the_desktop_client_by_default(client, origin):
    response = client.get("/health", headers={"Origin": origin})
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in response.headers.get("Vary", "")
    assert response.headers.get("Access-Control-Allow-Credentials") is None


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:1421", "http://tauri.localhost.evil.example",
                                    "null"])
def test_cors_refuses_other_origins(client, origin):
    response = client.get("/health", headers={"Origin": origin})
    assert response.status_code == 200  # CORS is enforced by the browser: no allow header, no read
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options("/v1/plugins", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_a_request_without_origin_gets_no_cors_headers_but_says_it_varies(client):
    # Not a CORS request: nothing to allow; a cache must still not serve it to a browser's origin.
    for _ in range(2):  # computed, then remembered
        response = client.get("/health")
        assert not [name for name in response.headers.keys() if name.lower().startswith("access-control-")]
        assert "Origin" in response.headers.get("Vary", "")
    refused = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Origin" in refused.headers.get("Vary", "")


@pytest.mark.parametrize("origins", ["*", "https://app.example.com"])
def test_any_origin_or_a_single_one_still_varies(make_app, origins):
    # flask-cors answers "*" by echoing the Origin, and a single origin is allowed for some
    # requests only: either way the response depends on the Origin.
    client = make_app(CORS_ORIGINS=origins).test_client()
    response = client.get("/health", headers={"Origin": "https://app.example.com"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in response.headers.get("Vary", "")
    assert "Access-Control-Allow-Origin" not in client.get("/health").headers
    preflight = client.options("/v1/plugins", headers={"Origin": "https://app.example.com",
                                                       "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in preflight.headers.get("Vary", "")


def test_configured_cors_origins_replace_the_defaults(make_app):
    client = make_app(CORS_ORIGINS="https://app.example.com, https://admin.example.com").test_client()
    for origin in ("https://app.example.com", "https://admin.example.com"):
        assert client.get("/health", headers={"Origin": origin}).headers["Access-Control-Allow-Origin"] == origin
    response = client.get("/health", headers={"Origin": "http://localhost:1420"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_preflight_answers_with_methods_and_allowed_headers(client):
    requested = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
    response = client.options("/v1/plugins", headers={
        "Origin": "http://localhost:1420",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": requested,
    })
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:1420"
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "x-request-id"} <= allowed
    # No body and no authentication needed for a preflight.
    assert "X-RateLimit-Limit" not in response.headers


def test_preflight_does_not_approve_arbitrary_headers(client):
    response = client.options("/v1/plugins", headers={
        "Origin": "http://localhost:1420",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-Evil-Header",
    })
    allowed = response.headers.get("Access-Control-Allow-Headers", "").lower()
    assert "x-evil-header" not in allowed


def test_exposed_headers_let_the_client_read_ids_and_limits(client):
    response = client.get("/", headers={"Origin": "tauri://localhost"})
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"} <= exposed
    # ...and the headers really are there to read.
    for name in ("X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert name in response.headers


def test_cors_headers_on_errors_too(client):
    # A browser client must be able to read an error envelope, not just successes.
    for response in (client.get("/v1/missing", headers={"Origin": "http://localhost:1420"}),
                     client.get("/v1/plugins", headers={"Origin": "http://localhost:1420"})):
        assert response.status_code >= 400
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:1420"
