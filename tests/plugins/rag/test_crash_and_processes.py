"""Crash safety (a worker killed mid-job) and several processes following one collection's versions."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import tasks
from app.extensions import db
from tests.conftest import base_config
from tests.support.identity import bearer, signup
from tests.support.servers import flask_worker, subprocess_env, wait_until

from .conftest import index, search

OLD = [{"path": "docs/policy.md", "content": "Expense reports are approved by the finance team within a week."}]
NEW_TOPICS = ["glacier", "volcano", "harbour", "orchard", "lighthouse", "canyon", "meadow", "tundra"]


def new_content() -> str:
    """Long enough to take many embedding batches: the worker is killed in the middle of them."""
    return "\n\n".join(f"Section {i}: the {NEW_TOPICS[i % 8]} survey number {i} recorded observation {i * 7} "
                       f"about {NEW_TOPICS[(i + 3) % 8]} conditions and equipment list {i}." for i in range(160))


def chunk_rows(app, active: bool) -> int:
    from plugins.rag.models import RagChunk

    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(RagChunk).where(RagChunk.active == active))


def test_a_killed_indexing_job_leaves_the_previous_index_searchable(make_app, minilm, schema, worker, redis_url,
                                                                     redis_client, tmp_path):
    rag = {"RAG_INDEX_DIR": str(tmp_path / "indexes"), "RAG_CHUNK_TOKENS": 40, "RAG_CHUNK_OVERLAP": 0,
           "RAG_EMBED_BATCH_SIZE": 2, "JOBS_PROGRESS_INTERVAL": 0.05}
    local = make_app(**rag)  # in-process jobs, same database and index directory
    client = local.test_client()
    alice = signup(client, "alice@example.com")
    index(local, client, alice, OLD)
    version = client.get("/v1/rag/collections/default", headers=bearer(alice)).get_json()["data"]["index_version"]
    queued = make_app(REDIS_URL=redis_url, **rag)
    response = queued.test_client().post("/v1/rag/index", headers=bearer(alice), json={
        "files": [{"path": "docs/policy.md", "content": new_content()}], "chunking_strategy": "fixed"})
    assert response.status_code == 202
    job_id = response.get_json()["data"]["job_id"]
    env = subprocess_env({**base_config(schema, worker), "REDIS_URL": redis_url},
                         overrides={**rag, "JOBS_HEARTBEAT_SECONDS": 0.2, "JOBS_ABANDONED_AFTER": 1})

    def embedding_under_way():
        with queued.app_context():
            job = db.session.get(tasks.Job, job_id, populate_existing=True)
            return job.status == "running" and "embedded" in (job.message or "") and job.progress < 80

    with flask_worker(env, tmp_path, name=f"{worker}-doomed") as doomed:
        wait_until(embedding_under_way, timeout=180, interval=0.05, message="the job to be embedding")
        doomed.kill()

    # The old text is still what every search finds; the half-indexed new text is nowhere.
    for mode in ("hybrid", "dense", "lexical"):
        found = search(client, alice, "who approves expense reports", mode=mode, limit=3)["results"]
        assert [r["content"] for r in found] == [OLD[0]["content"]], mode
        hits = search(client, alice, "glacier survey equipment", mode=mode, limit=3)["results"]
        assert all(r["content"] == OLD[0]["content"] for r in hits), mode
    collection = client.get("/v1/rag/collections/default", headers=bearer(alice)).get_json()["data"]
    assert (collection["chunks"], collection["index_version"]) == (1, version)
    assert chunk_rows(local, active=True) == 1
    staged = chunk_rows(local, active=False)

    runner = queued.test_cli_runner()
    wait_until(lambda: "1 failed" in runner.invoke(args=["jobs", "reap"]).output, timeout=30,
               message="the reaper to fail the dead worker's job")
    job = client.get(f"/v1/rag/jobs/{job_id}", headers=bearer(alice)).get_json()["data"]
    assert job["status"] == "failed" and job["error"].startswith("worker lost")
    assert job["counts"]["failed"] == 1 and job["failures"][0]["path"] == "docs/policy.md"

    # Indexing again succeeds, and clears what the dead job had staged.
    again = index(local, client, alice, [{"path": "docs/policy.md", "content": new_content()}],
                  chunking_strategy="fixed")
    assert again["job"]["status"] == "succeeded" and staged >= 0
    assert chunk_rows(local, active=False) == 0 and chunk_rows(local, active=True) == again["job"]["counts"]["chunks"]
    assert "glacier" in search(client, alice, "glacier survey", limit=1)["results"][0]["content"]
    assert all("Expense reports" not in r["content"] for r in search(client, alice, "expense reports")["results"])


@pytest.mark.db
def test_processes_follow_new_versions_and_a_host_without_files_rebuilds(make_app, minilm, tmp_path):
    shared = str(tmp_path / "shared")
    writer = make_app(RAG_INDEX_DIR=shared)
    reader = make_app(RAG_INDEX_DIR=shared)  # another worker on this host: its own memory, the same files
    other_host = make_app(RAG_INDEX_DIR=str(tmp_path / "elsewhere"))  # no files at all
    write, read, far = writer.test_client(), reader.test_client(), other_host.test_client()
    alice = signup(write, "alice@example.com")
    index(writer, write, alice, OLD)
    assert search(read, alice, "expense approval", limit=1)["results"][0]["content"] == OLD[0]["content"]
    index(writer, write, alice, [{"path": "docs/policy.md",
                                  "content": "Travel bookings go through the office manager."}])
    for client in (read, far):
        found = search(client, alice, "who books travel", limit=3)["results"]
        assert [r["content"] for r in found] == ["Travel bookings go through the office manager."]
    assert (tmp_path / "elsewhere").is_dir()
