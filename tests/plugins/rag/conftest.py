"""Fixtures of the rag tests: the real MiniLM model (loaded once per test process), apps with a private index
directory, two users, and helpers to run indexing jobs to the end."""
from __future__ import annotations

from typing import Any

import pytest

from app import tasks
from tests.support.identity import bearer, signup


@pytest.fixture(scope="session")
def minilm():
    """The embedding model, loaded once for the whole session (the plugin keeps one per process)."""
    from plugins.rag import embedders

    embedder = embedders.get("minilm", {"RAG_EMBED_BATCH_SIZE": 32})
    embedder.model  # noqa: B018  (load it now, not inside the first test's timing)
    return embedder


@pytest.fixture
def rag_app(make_app, minilm, tmp_path):
    return make_app(RAG_INDEX_DIR=str(tmp_path / "indexes"), JOBS_PROGRESS_INTERVAL=0.05)


@pytest.fixture
def client(rag_app):
    return rag_app.test_client()


@pytest.fixture
def alice(client) -> dict[str, Any]:
    return signup(client, "alice@example.com")


@pytest.fixture
def bob(client) -> dict[str, Any]:
    return signup(client, "bob@example.com")


def finish(app: Any, client: Any, session: Any, job_id: str | None) -> dict[str, Any]:
    """Wait for an in-process job and return GET /v1/rag/jobs/{id}."""
    assert job_id
    assert tasks.wait_idle(app, 120), "the indexing job did not finish"
    response = client.get(f"/v1/rag/jobs/{job_id}", headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def ingest(app: Any, client: Any, session: Any, expect: str = "succeeded", **body: Any) -> dict[str, Any]:
    response = client.post("/v1/rag/ingest", json=body, headers=bearer(session))
    assert response.status_code == 202, response.get_data(as_text=True)
    data = response.get_json()["data"]
    job = finish(app, client, session, data["job_id"])
    assert job["status"] == expect, job
    return {**data, "job": job}


def index(app: Any, client: Any, session: Any, files: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/rag/index", json={"files": files, **body}, headers=bearer(session))
    assert response.status_code == 202, response.get_data(as_text=True)
    data = response.get_json()["data"]
    if data["job_id"]:
        data["job"] = finish(app, client, session, data["job_id"])
        assert data["job"]["status"] == "succeeded", data["job"]
    return data


def search(client: Any, session: Any, query: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/rag/search", json={"query": query, **body}, headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]
