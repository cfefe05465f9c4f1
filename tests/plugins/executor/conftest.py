"""Fixtures of the executor tests: an app with the executor on and no model, admins and a plain user."""
from __future__ import annotations

from typing import Any

import pytest

from tests.support.identity import bearer, make_admin, signup


@pytest.fixture
def workspaces(tmp_path):
    return tmp_path / "workspaces"


@pytest.fixture
def executor_app(make_app, workspaces):
    """Executor on, rules planner only (no model configured), workspaces under the test's tmp dir."""
    return make_app(EXECUTOR_ENABLED=True, LLM_OFFLINE=False, LLM_PROVIDERS=[], EXECUTOR_WORKSPACE=str(workspaces),
                    EXECUTOR_STEP_TIMEOUT=30)


@pytest.fixture
def client(executor_app):
    return executor_app.test_client()


@pytest.fixture
def admin(executor_app, client) -> dict[str, Any]:
    return make_admin(executor_app, client, "root@example.com")


@pytest.fixture
def other_admin(executor_app, client) -> dict[str, Any]:
    return make_admin(executor_app, client, "ops@example.com")


@pytest.fixture
def user(client) -> dict[str, Any]:
    return signup(client, "ada@example.com")


def plan(client: Any, session: dict[str, Any], command: str, **context: Any) -> dict[str, Any]:
    response = client.post("/v1/executor/plan", json={"command": command, "context": context},
                           headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def run(client: Any, session: dict[str, Any], task: dict[str, Any], *, confirm: bool = False,
        steps: list[dict[str, Any]] | None = None, stream: bool = False, **kwargs: Any) -> Any:
    body = {"task_id": task["task_id"], "confirm": confirm, "stream": stream,
            "steps": steps if steps is not None else [{"id": s["id"], "command": s["command"],
                                                        "description": s["description"]} for s in task["steps"]]}
    return client.post("/v1/executor/run", json=body, headers=bearer(session), **kwargs)


def run_ok(client: Any, session: dict[str, Any], task: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = run(client, session, task, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]
