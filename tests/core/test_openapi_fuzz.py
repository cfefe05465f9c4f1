"""schemathesis fuzzes every operation of the app's `/openapi.json` against the WSGI app.

The spec comes from the app the suite builds (every installed plugin, the
third-party sample included), so a route a plugin adds is fuzzed without
touching this file: one test item per operation. Checks: no 5xx, responses
conform to their documented schema and content type, and the status code is
documented: explicitly for successes, through the error envelope for errors.

Bounded and reproducible: FUZZ_EXAMPLES examples per operation and phase
(default 10; raise it for a deeper local run), derandomized generation, no
example database.

Why the spec is read at import: schemathesis' fixture-based loader
(`schemathesis.pytest.from_fixture`) relies on a pytest internal that pytest
9.2 removed (`Node._nodeid`), so the operations are collected from a spec-only
app here, and each case is sent to the suite's real app (`fuzz_app`), which
must serve the very same spec.
"""
from __future__ import annotations

import os
import re
import tempfile

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from app import create_app, llm, openapi
from tests.conftest import _clean, base_config
from tests.core.llm.echo import EchoProvider

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
UNLIMITED = "1000000/minute"
TOKEN = "fuzz-token"


def _spec() -> dict:
    """The OpenAPI document of an app built like the suite's, without touching any database."""
    with tempfile.TemporaryDirectory() as instance:
        previous = os.environ.get("LUNAOS_INSTANCE_PATH")
        os.environ["LUNAOS_INSTANCE_PATH"] = instance
        try:
            app = create_app(base_config(f"sqlite:///{instance}/spec.db", "spec"))
            # Straight from the spec object: a request would start per-request machinery (jobs
            # maintenance) against this database without tables.
            with app.app_context():
                return app.json.loads(app.json.dumps(openapi.api(app).spec.to_dict()))
        finally:
            if previous is None:
                os.environ.pop("LUNAOS_INSTANCE_PATH", None)
            else:
                os.environ["LUNAOS_INSTANCE_PATH"] = previous


SPEC = _spec()
_config = SchemathesisConfig()
_config.update(seed=20261122, max_failures=None)
schema = schemathesis.openapi.from_dict(SPEC, config=_config)
schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"})
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
# Stateful testing follows OpenAPI links, which the spec does not declare.
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])


def documented_success(ctx, response, case):
    """Every success or redirect status is one the operation documents.

    Stricter than `status_code_conformance`, which the `default` response (the error
    envelope, on every operation) satisfies for any status. Errors may rely on that
    `default`: their body must still match the error envelope (response_schema_conformance).
    """
    status = response.status_code
    if status >= 400:
        return None
    if case.method.upper() != case.operation.method.upper():
        # schemathesis probing a method the route does not declare: Flask answers OPTIONS
        # itself (CORS preflight) and HEAD for every GET; anything else must be a 405 error.
        if case.method.upper() in ("OPTIONS", "HEAD"):
            return None
        raise AssertionError(f"{case.method} on {case.operation.path} answered {status}, not 405")
    documented = set(case.operation.definition.raw.get("responses", {}))
    if str(status) not in documented and f"{str(status)[0]}XX" not in documented:
        raise AssertionError(f"{case.operation.label} answered {status}, which it does not document "
                             f"(documented: {sorted(documented)}): {response.text[:300]}")
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          documented_success]


@pytest.fixture(scope="module")
def fuzz_app(schema, worker):
    """One app for the whole fuzz (building one per operation would dominate the run)."""
    # Limits raised, not disabled: the limiter stays in the request path but never answers 429 here.
    # A provider that answers at once, so the AI routes are fuzzed through their success paths too
    # (a real model would spend seconds per generated request).
    llm.register_kind("echo", EchoProvider, replace=True)
    app = create_app({**base_config(schema, worker), "RATELIMIT_ANONYMOUS": UNLIMITED,
                      "RATELIMIT_TIERS": {"free": UNLIMITED, "pro": UNLIMITED, "team": UNLIMITED},
                      "LLM_PROVIDERS": [{"name": "echo", "type": "echo", "models": ["echo-1"]}]})
    from app.security import Principal, register_resolver

    everything = Principal(kind="user", id="usr_fuzz", user_id="usr_fuzz", role="admin", tier="team",
                           scopes=frozenset({"*"}))
    register_resolver(app, lambda token: everything if token == TOKEN else None)
    assert app.test_client().get("/openapi.json").get_json() == SPEC, "the fuzzed spec is not the app's"
    yield app
    _clean(app)  # rows the fuzz created; also disposes the engine


@schema.parametrize()
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture,
                                            hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.filter_too_much],
                     deadline=None)
def test_operation(case, fuzz_app):
    case.call_and_validate(app=fuzz_app, checks=CHECKS)


def test_the_fuzz_covers_the_core_routes_with_a_working_token(fuzz_app):
    # An empty spec, or a token the app refuses, would make the fuzz above pass vacuously.
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert {"GET /", "GET /health", "GET /v1/plugins"} <= labels
    response = fuzz_app.test_client().get("/v1/plugins", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200


# ---- the spec itself -------------------------------------------------------------------------------

NOT_IN_SPEC = ("/docs", "/openapi.json", "/static/")


def _spec_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_every_route_is_in_the_spec(fuzz_app):
    missing = []
    for rule in fuzz_app.url_map.iter_rules():
        if rule.rule.startswith(NOT_IN_SPEC):
            continue
        documented = SPEC["paths"].get(_spec_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() not in documented:
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert missing == [], "routes served but not documented (register them through app.openapi)"


def test_spec_declares_both_bearer_schemes():
    schemes = SPEC["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyAuth"]["type"] == "http" and schemes["apiKeyAuth"]["scheme"] == "bearer"


def test_every_operation_documents_success_and_the_error_envelope():
    problems = []
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.get("responses", {})
            if not any(code.startswith(("2", "3")) for code in responses):
                problems.append(f"{method.upper()} {path}: no success response")
            if "default" not in responses:
                problems.append(f"{method.upper()} {path}: no default (error envelope) response")
            if operation.get("security") and "401" not in responses:
                problems.append(f"{method.upper()} {path}: needs a credential but does not document 401")
    assert problems == []
    default = SPEC["components"]["responses"]["DEFAULT_ERROR"]["content"]["application/json"]["schema"]
    assert default["$ref"].endswith("/Error")
