"""A test-only app factory for servers and workers that tests start as subprocesses.

    gunicorn -c gunicorn.conf.py "tests.support.testapp:create_test_app()"
    FLASK_APP=tests.support.testapp:create_test_app flask worker --burst

It is the production `create_app()` plus test hooks, driven by the environment
the test sets:
- `TEST_BEARER_TOKEN`: that bearer token authenticates as the user
  `TEST_USER_ID` (default `usr_test`), so core routes can be exercised without
  the identity plugins;
- `TEST_CONFIG`: a JSON object of config overrides (settings not declared as
  `LUNAOS_*` names yet, or values a test wants to force);
- the test job kinds of `tests.support.test_tasks` are registered, and
  `POST /test/jobs/<kind>` (authenticated) enqueues one for the caller with the
  JSON body as payload, so a test can start jobs inside the server process.
Each response also names the process that served it (`X-Served-By`), so a test
can tell gunicorn workers apart.
"""
from __future__ import annotations

import json
import os

from flask import Flask, Response, request

from app import create_app, tasks
from app.security import Principal, authenticated_principal, constant_time_equals, register_resolver
from tests.support import test_tasks  # noqa: F401  (registers the test job kinds)


def create_test_app() -> Flask:
    overrides = json.loads(os.environ.get("TEST_CONFIG") or "{}")
    app = create_app(overrides)
    token = os.environ.get("TEST_BEARER_TOKEN")
    if token:
        user_id = os.environ.get("TEST_USER_ID", "usr_test")
        principal = Principal(kind="user", id=user_id, user_id=user_id)

        def resolve(presented: str) -> Principal | None:
            return principal if constant_time_equals(presented, token) else None

        register_resolver(app, resolve)

    @app.post("/test/jobs/<kind>")
    def enqueue_job(kind: str) -> tuple[dict[str, str], int]:
        owner = authenticated_principal().user_id
        job = tasks.enqueue(kind, request.get_json(silent=True) or {}, owner_id=owner)
        return {"id": job.id}, 202

    @app.after_request
    def served_by(response: Response) -> Response:
        response.headers["X-Served-By"] = str(os.getpid())
        return response

    return app
