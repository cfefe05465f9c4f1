"""Every response is an envelope: `{data}`, `{data, pagination}` or `{error: {code, message, details, request_id}}`.

A small smorest blueprint (the same `app.http.Blueprint` plugins use) gives the
tests routes with request schemas, paginated lists and views that fail on purpose.
"""
from __future__ import annotations

import json

import marshmallow as ma
import pytest
from flask.views import MethodView

from app import errors, openapi
from app.http import Blueprint, Page, PageArgs
from tests.support.logs import capture as capture_logs

ERROR_KEYS = {"code", "message", "details", "request_id"}


class ItemSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=20))
    count = ma.fields.Integer(required=True, validate=ma.validate.Range(min=0))
    tags = ma.fields.List(ma.fields.String(validate=ma.validate.Length(max=5)), load_default=list)


class EmailTaken(errors.Conflict):
    code, message = "EMAIL_TAKEN", "That email is already registered."


blp = Blueprint("envelope_test", __name__, url_prefix="/v1/envelope-test")
ITEMS = [{"name": f"item-{i}", "count": i, "tags": []} for i in range(7)]


@blp.route("/items")
class Items(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.paginated(ItemSchema)
    def get(self, args):
        start = (args["page"] - 1) * args["per_page"]
        return Page(ITEMS[start:start + args["per_page"]], args["page"], args["per_page"], len(ITEMS))

    @blp.arguments(ItemSchema)
    @blp.response(201, ItemSchema)
    def post(self, item):
        return item


@blp.route("/crash")
class Crash(MethodView):
    def get(self):
        # Text that must never reach a client: it names internals and carries a secret.
        raise RuntimeError("database password=hunter2 at /srv/internal/db.py")


FAILURES = {
    "not-found": errors.NotFound("No agent with that id."),
    "forbidden": errors.Forbidden("Missing scope.", code="INSUFFICIENT_SCOPE", details={"required_scope": "rag:write"}),
    "unauthorized": errors.Unauthorized(),
    "conflict": EmailTaken(),
    "validation": errors.ValidationFailed({"email": ["Not a valid email address."]}),
    "rate-limited": errors.RateLimited(30),
    "unavailable": errors.ServiceUnavailable("Redis is down."),
}


@blp.route("/fail/<kind>")
class Fail(MethodView):
    def get(self, kind):
        raise FAILURES[kind]


@pytest.fixture
def app(make_app):
    app = make_app(MAX_CONTENT_LENGTH=256)
    openapi.register_blueprint(app, blp)
    return app


@pytest.fixture
def log_stream(app):
    """The app's real log handler (redaction filter + JSON formatter), writing into a buffer."""
    return capture_logs(app)


def assert_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    # The id a user quotes in a bug report is the one in the response header.
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    return body["error"]


def test_unknown_route_is_404_envelope(client):
    error = assert_error(client.get("/v1/no-such-thing"), 404, "NOT_FOUND")
    assert error["details"] == {}


def test_unknown_route_under_post_is_404_not_405(client):
    assert_error(client.post("/v1/no-such-thing", json={}), 404, "NOT_FOUND")


def test_wrong_method_is_405_with_allow_header_and_details(client):
    response = client.delete("/v1/envelope-test/items")
    error = assert_error(response, 405, "METHOD_NOT_ALLOWED")
    allowed = error["details"]["allowed_methods"]
    assert {"GET", "POST"} <= set(allowed)
    assert "DELETE" not in allowed
    assert sorted(m.strip() for m in response.headers["Allow"].split(",")) == sorted(allowed)


def test_malformed_json_is_400_invalid_request(client):
    response = client.post("/v1/envelope-test/items", data='{"name": "a", "count": ', content_type="application/json")
    error = assert_error(response, 400, "INVALID_REQUEST")
    assert "json" in error["message"].lower()


def test_deeply_nested_json_is_400_not_a_crash(make_app):
    app = make_app()  # the default body limit: 100 kB of "[" is well inside it
    openapi.register_blueprint(app, blp)
    stream = capture_logs(app)
    response = app.test_client().post("/v1/envelope-test/items", data="[" * 100_000,
                                      content_type="application/json")
    assert_error(response, 400, "INVALID_REQUEST")
    assert "Traceback" not in stream.getvalue()


def test_lone_surrogate_in_a_string_is_400(client):
    # Valid JSON escapes, but not text: PostgreSQL (and any UTF-8 encoder) would fail on it later.
    for name in ('"\\ud800"', '"abc\\udfff"', '"\\udc00\\ud800"'):
        response = client.post("/v1/envelope-test/items", data=f'{{"name": {name}, "count": 1}}',
                               content_type="application/json")
        assert_error(response, 400, "INVALID_REQUEST")


def test_escaped_surrogate_pairs_are_ordinary_text(client):
    response = client.post("/v1/envelope-test/items", data='{"name": "moon \\ud83c\\udf19", "count": 1}',
                           content_type="application/json")
    assert response.status_code == 201
    assert response.get_json()["data"]["name"] == "moon \U0001F319"


def test_schema_violation_is_422_with_per_field_details(client):
    body = {"name": "", "count": "many", "tags": ["ok", "far-too-long"]}
    response = client.post("/v1/envelope-test/items", json=body)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    fields = error["details"]["fields"]
    assert set(fields) == {"name", "count", "tags.1"}
    assert all(isinstance(m, list) and m and all(isinstance(s, str) for s in m) for m in fields.values())
    assert "integer" in fields["count"][0].lower()


def test_missing_required_fields_are_named(client):
    error = assert_error(client.post("/v1/envelope-test/items", json={}), 422, "VALIDATION_ERROR")
    assert set(error["details"]["fields"]) == {"name", "count"}


def test_invalid_query_argument_is_422_named_by_location(client):
    error = assert_error(client.get("/v1/envelope-test/items?per_page=100000"), 422, "VALIDATION_ERROR")
    assert set(error["details"]["fields"]) == {"query.per_page"}


def test_body_over_max_content_length_is_413(client):
    response = client.post("/v1/envelope-test/items", json={"name": "x", "count": 1, "tags": ["a"] * 200})
    error = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["max_bytes"] == 256


def test_body_under_the_limit_is_accepted(client):
    response = client.post("/v1/envelope-test/items", json={"name": "x", "count": 1})
    assert response.status_code == 201
    assert response.get_json() == {"data": {"name": "x", "count": 1, "tags": []}}


def test_unhandled_exception_is_500_without_internals_and_logged_with_request_id(client, log_stream):
    response = client.get("/v1/envelope-test/crash", headers={"X-Request-ID": "crash-report-1"})
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert error["request_id"] == "crash-report-1"
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "hunter2", "/srv/internal", "db.py", "password"):
        assert leak not in text

    records = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    failures = [r for r in records if r.get("level") == "ERROR"]
    assert len(failures) == 1
    logged = failures[0]
    assert logged["request_id"] == "crash-report-1"
    # The operator gets the traceback (with the secret redacted); the client got none of it.
    assert "RuntimeError" in logged["exc_info"] and "Traceback" in logged["exc_info"]
    assert "hunter2" not in log_stream.getvalue()


@pytest.mark.parametrize(
    "kind, status, code",
    [
        ("not-found", 404, "NOT_FOUND"),
        ("forbidden", 403, "INSUFFICIENT_SCOPE"),
        ("unauthorized", 401, "UNAUTHORIZED"),
        ("conflict", 409, "EMAIL_TAKEN"),
        ("validation", 422, "VALIDATION_ERROR"),
        ("rate-limited", 429, "RATE_LIMIT_EXCEEDED"),
        ("unavailable", 503, "SERVICE_UNAVAILABLE"),
    ],
)
def test_api_errors_raised_from_a_view(client, kind, status, code):
    response = client.get(f"/v1/envelope-test/fail/{kind}")
    error = assert_error(response, status, code)
    raised = FAILURES[kind]
    assert error["message"] == raised.message
    assert error["details"] == raised.details


def test_api_error_details_and_headers_reach_the_client(client):
    forbidden = assert_error(client.get("/v1/envelope-test/fail/forbidden"), 403, "INSUFFICIENT_SCOPE")
    assert forbidden["details"] == {"required_scope": "rag:write"}

    response = client.get("/v1/envelope-test/fail/unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")

    response = client.get("/v1/envelope-test/fail/rate-limited")
    assert response.headers["Retry-After"] == "30"
    assert response.get_json()["error"]["details"]["retry_after"] == 30

    validation = assert_error(client.get("/v1/envelope-test/fail/validation"), 422, "VALIDATION_ERROR")
    assert validation["details"] == {"fields": {"email": ["Not a valid email address."]}}


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("get", "/nowhere", {}),
        ("put", "/v1/envelope-test/items", {}),
        ("post", "/v1/envelope-test/items", {"data": "{", "content_type": "application/json"}),
        ("post", "/v1/envelope-test/items", {"json": {"count": -1}}),
        ("post", "/v1/envelope-test/items", {"data": "x" * 1000, "content_type": "application/json"}),
        ("get", "/v1/envelope-test/crash", {}),
        ("get", "/v1/envelope-test/fail/conflict", {}),
        ("get", "/v1/plugins", {}),  # 401 from the core's own route
    ],
)
def test_every_error_carries_the_request_id_of_the_response(client, method, path, kwargs):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code >= 400
    body = response.get_json()
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    # An incoming id is honoured in the error body too.
    response = getattr(client, method)(path, headers={"X-Request-ID": "trace-abc.123"}, **kwargs)
    assert response.get_json()["error"]["request_id"] == "trace-abc.123"


def test_single_object_success_envelope(client):
    response = client.post("/v1/envelope-test/items", json={"name": "lamp", "count": 3, "tags": ["home"]})
    assert response.status_code == 201
    assert response.get_json() == {"data": {"name": "lamp", "count": 3, "tags": ["home"]}}


def test_paginated_success_envelope(client):
    body = client.get("/v1/envelope-test/items?page=2&per_page=3").get_json()
    assert set(body) == {"data", "pagination"}
    assert [item["name"] for item in body["data"]] == ["item-3", "item-4", "item-5"]
    assert body["pagination"] == {"page": 2, "per_page": 3, "total": 7, "pages": 3, "has_next": True, "has_prev": True}

    last = client.get("/v1/envelope-test/items?page=3&per_page=3").get_json()
    assert [item["name"] for item in last["data"]] == ["item-6"]
    assert last["pagination"]["has_next"] is False

    empty = client.get("/v1/envelope-test/items?page=9&per_page=3").get_json()
    assert empty["data"] == [] and empty["pagination"]["total"] == 7


def test_empty_list_has_one_page(client, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ITEMS", [])
    body = client.get("/v1/envelope-test/items").get_json()
    assert body == {"data": [], "pagination": {"page": 1, "per_page": 20, "total": 0, "pages": 1,
                                               "has_next": False, "has_prev": False}}


def _resolve(spec, node):
    while "$ref" in node:
        name = node["$ref"].split("/")[-1]
        section = "responses" if "/responses/" in node["$ref"] else "schemas"
        node = spec["components"][section][name]
    return node


def test_spec_documents_the_envelopes(client):
    spec = client.get("/openapi.json").get_json()
    operations = spec["paths"]["/v1/envelope-test/items"]

    created = _resolve(spec, operations["post"]["responses"]["201"]["content"]["application/json"]["schema"])
    assert created["required"] == ["data"]
    assert _resolve(spec, created["properties"]["data"])["properties"].keys() >= {"name", "count", "tags"}
    # The request body is the bare object, not an envelope.
    request = _resolve(spec, operations["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert "data" not in request["properties"] and "name" in request["properties"]

    listed = _resolve(spec, operations["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(listed["required"]) == {"data", "pagination"}
    assert listed["properties"]["data"]["type"] == "array"
    assert "name" in _resolve(spec, listed["properties"]["data"]["items"])["properties"]
    pagination = _resolve(spec, listed["properties"]["pagination"])
    assert set(pagination["required"]) == {"page", "per_page", "total", "pages", "has_next", "has_prev"}

    # Failures: the validation response and the default one both use the error envelope.
    for response in (operations["post"]["responses"]["422"], operations["post"]["responses"]["default"]):
        error_schema = _resolve(spec, _resolve(spec, response)["content"]["application/json"]["schema"])
        assert error_schema["required"] == ["error"]
        assert set(_resolve(spec, error_schema["properties"]["error"])["required"]) == ERROR_KEYS
