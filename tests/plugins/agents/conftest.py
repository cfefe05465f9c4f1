"""Fixtures of the agents tests: seeded catalog, two users, and apps with or without a real model."""
from __future__ import annotations

from typing import Any

import pytest

from tests.support.identity import bearer, create_key, signup

RUN_SCOPES = ["agents:read", "agents:write"]


def seed(app: Any) -> None:
    """The built-in catalog (the harness empties every table between tests; the migration seeded it once)."""
    from plugins.agents import service

    with app.app_context():
        service.seed_catalog()


def without_retriever(app: Any) -> Any:
    """Tests register their own retriever (or none): whatever a loaded rag plugin registered is removed."""
    from app import retrieval

    retrieval.unregister_retriever(app)
    return app


@pytest.fixture
def agents_app(make_app):
    """An app without any model (LLM_OFFLINE off, no providers) and without a retriever."""
    app = without_retriever(make_app(LLM_OFFLINE=False, LLM_PROVIDERS=[]))
    seed(app)
    return app


@pytest.fixture
def client(agents_app):
    return agents_app.test_client()


@pytest.fixture
def alice(client) -> dict[str, Any]:
    return signup(client, "alice@example.com")


@pytest.fixture
def bob(client) -> dict[str, Any]:
    return signup(client, "bob@example.com")


def auth(session: dict[str, Any]) -> dict[str, str]:
    return bearer(session)


def key_for(client: Any, session: dict[str, Any], scopes: list[str] | None = None) -> str:
    return create_key(client, session, scopes=scopes or RUN_SCOPES)["key"]


def make_agent(client: Any, session: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"name": "Helper", "system_prompt": "You answer in one short sentence.", "temperature": 0, **fields}
    response = client.post("/v1/agents", json=body, headers=bearer(session))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["data"]
