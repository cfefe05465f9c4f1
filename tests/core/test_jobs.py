"""Jobs: in-process and on real RQ workers, the owner-only API, cancellation and recovery from dead workers."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from app import tasks
from app.errors import ServiceUnavailable
from app.extensions import db
from app.ids import utcnow
from app.tasks import Job
from tests.conftest import base_config
from tests.support import test_tasks
from tests.support.servers import flask_worker, forget_rq_state, free_port, subprocess_env, wait_until

pytestmark = pytest.mark.db

A = {"Authorization": "Bearer token-a"}
B = {"Authorization": "Bearer token-b"}


@pytest.fixture
def users(principal_token):
    def register(app):
        principal_token(app, "token-a", id="usr_a")
        principal_token(app, "token-b", id="usr_b")
        return app

    return register


@pytest.fixture
def jobs_app(make_app, users):
    return users(make_app(JOBS_PROGRESS_INTERVAL=0.05))


def enqueue(app, kind: str, payload: dict | None = None, **options: Any) -> str:
    options.setdefault("owner_id", "usr_a")
    with app.app_context():
        return tasks.enqueue(kind, payload, **options).id


def row(app, job_id: str) -> Job:
    with app.app_context():
        job = db.session.get(Job, job_id)
        db.session.expunge_all()
        return job


def api_job(client, job_id: str, headers=A) -> dict:
    response = client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.json
    return response.json["data"]


def idle(app) -> None:
    assert tasks.wait_idle(app, 20), "in-process jobs did not finish"


# --- in-process mode ------------------------------------------------------------------------------


def test_in_process_job_reports_progress_then_succeeds_with_its_result(jobs_app):
    client = jobs_app.test_client()
    gate = f"gate-{uuid.uuid4()}"
    job_id = enqueue(jobs_app, "test.gated", {"gate": gate})
    try:
        # The job is held at its gate, so this progress is seen while it is provably running.
        wait_until(lambda: row(jobs_app, job_id).progress == 10, message="progress 10")
        running = api_job(client, job_id)
        assert (running["status"], running["progress"]) == ("running", 10)
        assert running["message"] == "waiting at the gate"
        assert running["started_at"] is not None and running["finished_at"] is None
    finally:
        test_tasks.gate(gate).set()
    idle(jobs_app)
    done = api_job(client, job_id)
    assert done["status"] == "succeeded"
    assert done["result"] == {"gate": gate, "attempt": 1}
    assert done["progress"] == 100
    assert done["error"] is None and done["attempts"] == 1
    assert done["id"].startswith("job_") and done["kind"] == "test.gated"
    assert done["finished_at"].endswith("Z") and done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert "payload" not in done  # a job's input may hold anything; the status API does not echo it


def test_failing_job_is_failed_with_a_clear_message_and_the_traceback_stays_in_the_log(jobs_app, caplog):
    client = jobs_app.test_client()
    crashed = enqueue(jobs_app, "test.fail", {"message": "disk on fire"})
    refused = enqueue(jobs_app, "test.fail", {"message": "Repository not found.", "job_error": True})
    unserialisable = enqueue(jobs_app, "test.not_json")
    idle(jobs_app)

    crash = api_job(client, crashed)
    assert crash["status"] == "failed"
    assert crash["error"] == "ValueError: disk on fire"
    assert crash["progress"] == 40 and crash["message"] == "about to fail"  # where it got to
    assert api_job(client, refused)["error"] == "Repository not found."
    assert "not JSON-serialisable" in api_job(client, unserialisable)["error"]
    assert "Traceback" not in str(crash)
    # The server log has the traceback, tied to the job.
    logged = [r for r in caplog.records if r.name == "lunaos.jobs" and crashed in r.getMessage()]
    assert logged and "Traceback" in (logged[0].exc_text or "") and "disk on fire" in logged[0].exc_text


def test_failed_attempts_are_retried_up_to_the_limit(jobs_app):
    client = jobs_app.test_client()
    recovers = enqueue(jobs_app, "test.flaky", {"fail_attempts": 1}, retries=1)
    gives_up = enqueue(jobs_app, "test.flaky", {"fail_attempts": 5}, retries=2)
    idle(jobs_app)
    ok = api_job(client, recovers)
    assert (ok["status"], ok["attempts"], ok["result"], ok["error"]) == ("succeeded", 2, {"attempt": 2}, None)
    failed = api_job(client, gives_up)
    assert (failed["status"], failed["attempts"]) == ("failed", 3)
    assert failed["error"] == "attempt 3 fails on purpose"


def test_enqueue_refuses_unknown_kinds_and_unserialisable_payloads(jobs_app):
    with jobs_app.app_context():
        with pytest.raises(ValueError, match="unknown job kind 'nope'"):
            tasks.enqueue("nope")
        with pytest.raises(ValueError, match="JSON-serialisable"):
            tasks.enqueue("test.echo", {"value": object()})
        assert db.session.query(Job).count() == 0


def test_a_job_is_visible_to_its_owner_only(jobs_app):
    client = jobs_app.test_client()
    job_id = enqueue(jobs_app, "test.echo", {"value": 1})
    idle(jobs_app)
    assert api_job(client, job_id)["status"] == "succeeded"

    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
        other = client.get(path, headers=B)
        unknown = client.get(path.replace(job_id, "job_00000000000000000000000000"), headers=A)
        assert other.status_code == unknown.status_code == 404
        assert other.json["error"]["code"] == unknown.json["error"]["code"] == "NOT_FOUND"
        assert other.json["error"]["message"] == unknown.json["error"]["message"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=B).status_code == 404
    assert client.get("/v1/jobs", headers=B).json["data"] == []
    assert client.get(f"/v1/jobs/{job_id}").status_code == 401


def test_listing_is_paginated_newest_first_and_filters_by_status_and_kind(jobs_app):
    client = jobs_app.test_client()
    echoes = [enqueue(jobs_app, "test.echo", {"value": i}) for i in range(5)]
    failed = enqueue(jobs_app, "test.fail")
    enqueue(jobs_app, "test.echo", owner_id="usr_b")
    enqueue(jobs_app, "test.echo", owner_id=None)  # a system job belongs to nobody
    idle(jobs_app)

    seen = []
    page = 1
    while True:
        body = client.get(f"/v1/jobs?per_page=4&page={page}", headers=A).json
        assert body["pagination"]["total"] == 6 and body["pagination"]["pages"] == 2
        seen += [job["id"] for job in body["data"]]
        if not body["pagination"]["has_next"]:
            break
        page += 1
    assert seen == [failed, *reversed(echoes)]

    by_status = client.get("/v1/jobs?status=failed", headers=A).json
    assert [job["id"] for job in by_status["data"]] == [failed]
    by_kind = client.get("/v1/jobs?kind=test.echo&status=succeeded", headers=A).json
    assert by_kind["pagination"]["total"] == 5
    bad = client.get("/v1/jobs?status=exploded", headers=A)
    assert bad.status_code == 422 and "query.status" in bad.json["error"]["details"]["fields"]


def test_cancelling_a_queued_job_means_it_never_runs(make_app, users):
    app = users(make_app(JOBS_INPROCESS_THREADS=1))
    client = app.test_client()
    gate = f"gate-{uuid.uuid4()}"
    blocker = enqueue(app, "test.gated", {"gate": gate})
    try:
        wait_until(lambda: row(app, blocker).status == "running", message="the blocker to run")
        waiting = enqueue(app, "test.echo", {"value": 1})  # the only thread is busy: it stays queued
        response = client.post(f"/v1/jobs/{waiting}/cancel", headers=A)
        assert response.status_code == 200
        assert response.json["data"]["status"] == "cancelled"
    finally:
        test_tasks.gate(gate).set()
    idle(app)
    cancelled = api_job(client, waiting)
    assert (cancelled["status"], cancelled["attempts"], cancelled["started_at"]) == ("cancelled", 0, None)
    assert api_job(client, blocker)["status"] == "succeeded"
    again = client.post(f"/v1/jobs/{waiting}/cancel", headers=A)
    assert again.status_code == 409 and again.json["error"]["details"]["status"] == "cancelled"


def test_a_running_job_stops_when_cancelled(jobs_app):
    client = jobs_app.test_client()
    started = f"started-{uuid.uuid4()}"
    job_id = enqueue(jobs_app, "test.cancellable", {"started_gate": started})
    assert test_tasks.gate(started).wait(20)
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=A)
    assert response.status_code == 200
    assert response.json["data"]["status"] == "running"  # it stops when it next checks
    assert response.json["data"]["cancel_requested"] is True
    idle(jobs_app)
    job = api_job(client, job_id)
    assert job["status"] == "cancelled" and job["result"] is None and job["finished_at"]


def test_a_job_past_its_timeout_is_told_to_stop_and_fails(jobs_app):
    job_id = enqueue(jobs_app, "test.cancellable", timeout=1)
    idle(jobs_app)
    job = api_job(jobs_app.test_client(), job_id)
    assert (job["status"], job["error"]) == ("failed", "timed out after 1 seconds")


def test_progress_in_a_tight_loop_is_throttled(make_app):
    app = make_app(JOBS_PROGRESS_INTERVAL=0.5)
    job_id = enqueue(app, "test.spam", {"calls": 20000})
    idle(app)
    job = row(app, job_id)
    assert job.status == "succeeded" and job.progress == 100
    # seq counts every write clients can see: queued, running, a few progress flushes, succeeded.
    assert job.seq < 20


def _stale_row(app, kind: str, status: str, attempts: int, retries: int = 0, age: float = 600) -> str:
    with app.app_context():
        when = utcnow() - timedelta(seconds=age)
        job = Job(kind=kind, owner_id="usr_a", status=status, attempts=attempts, max_retries=retries,
                  payload={"value": "adopted"} if kind == "test.echo" else {}, heartbeat_at=when,
                  started_at=when if status == "running" else None, created_at=when, updated_at=when)
        db.session.add(job)
        db.session.commit()
        return job.id


def test_reaper_recovers_jobs_left_behind_by_a_dead_in_process_server(jobs_app):
    dead_no_retry = _stale_row(jobs_app, "test.echo", "running", attempts=1)
    dead_with_retry = _stale_row(jobs_app, "test.echo", "running", attempts=1, retries=1)
    orphan_queued = _stale_row(jobs_app, "test.echo", "queued", attempts=0)
    alive = _stale_row(jobs_app, "test.echo", "running", attempts=1, age=1)

    result = jobs_app.test_cli_runner().invoke(args=["jobs", "reap"])
    assert result.exit_code == 0, result.output
    assert "1 failed, 1 re-queued, 1 adopted" in result.output
    idle(jobs_app)

    lost = row(jobs_app, dead_no_retry)
    assert lost.status == "failed" and lost.error.startswith("worker lost") and lost.finished_at
    retried = row(jobs_app, dead_with_retry)
    assert (retried.status, retried.attempts, retried.result["value"]) == ("succeeded", 2, "adopted")
    adopted = row(jobs_app, orphan_queued)
    assert (adopted.status, adopted.attempts) == ("succeeded", 1)
    assert row(jobs_app, alive).status == "running"  # a fresh heartbeat: its process is alive


def test_health_reports_in_process_jobs_as_ok(jobs_app):
    body = jobs_app.test_client().get("/health").json
    assert body["services"]["queue"] == "ok: in-process"


# --- RQ mode with real `flask worker` processes ----------------------------------------------------


@pytest.fixture
def rq_app(make_app, users, redis_url, redis_client):
    app = users(make_app(REDIS_URL=redis_url))
    yield app
    forget_rq_state(redis_client, app)


def test_enqueue_with_redis_unreachable_fails_the_job_clearly_instead_of_stranding_it(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    with app.app_context():
        with pytest.raises(ServiceUnavailable):
            tasks.enqueue("test.echo", owner_id="usr_a")
        (job,) = db.session.query(Job).all()
        assert job.status == "failed" and "queue is unavailable" in job.error


def worker_env(schema: str, worker: str, redis_url: str, **overrides: Any) -> dict[str, str]:
    return subprocess_env({**base_config(schema, worker), "REDIS_URL": redis_url}, overrides=overrides or None)


def test_rq_worker_runs_jobs_and_records_results_and_failures(rq_app, schema, worker, redis_url, tmp_path):
    client = rq_app.test_client()
    assert client.get("/health").json["services"]["queue"] == "degraded: no workers"
    ok = enqueue(rq_app, "test.echo", {"value": 7, "steps": 3})
    refused = enqueue(rq_app, "test.fail", {"message": "Quota exceeded.", "job_error": True})
    crashed = enqueue(rq_app, "test.fail", {"message": "kaput"})
    assert api_job(client, ok)["status"] == "queued"

    with flask_worker(worker_env(schema, worker, redis_url), tmp_path) as process:
        assert process.wait(60) == 0, process.logs()
        log = process.logs()

    done = api_job(client, ok)
    assert done["status"] == "succeeded"
    assert done["result"] == {"value": 7, "job_id": ok, "owner_id": "usr_a"}
    assert api_job(client, refused)["error"] == "Quota exceeded."
    crash = api_job(client, crashed)
    assert (crash["status"], crash["error"]) == ("failed", "ValueError: kaput")
    assert "Traceback" in log and "kaput" in log  # the worker logged it in full


def test_worker_killed_mid_job_is_recovered_by_another_workers_maintenance_and_completes_there(
        rq_app, schema, worker, redis_url, redis_client, tmp_path):
    client = rq_app.test_client()
    # Short heartbeats so RQ notices the dead worker within seconds (defaults: 10 s / 60 s / 60 s).
    env = worker_env(schema, worker, redis_url, JOBS_HEARTBEAT_SECONDS=0.2, JOBS_ABANDONED_AFTER=3,
                     JOBS_REAP_INTERVAL=1)
    gate = f"lunaos-test-{worker}:gate:{uuid.uuid4()}"
    job_id = enqueue(rq_app, "test.gated", {"gate": gate, "redis_url": redis_url}, retries=1)
    started_registry = f"rq:wip:{rq_app.config['JOBS_QUEUE']}"

    def expiry() -> float:  # when RQ will consider the running execution abandoned
        return max((score for _, score in redis_client.zrange(started_registry, 0, -1, withscores=True)), default=0)

    with flask_worker(env, tmp_path, name=f"{worker}-first") as first:
        wait_until(lambda: row(rq_app, job_id).progress == 10, message="the job to run on the first worker")
        assert client.get("/health").json["services"]["queue"] == "ok: 1 worker"
        # While the worker lives, it keeps renewing RQ's heartbeat, so reaping leaves its job alone.
        seen = expiry()
        wait_until(lambda: expiry() > seen, message="RQ's execution heartbeat to be renewed")
        with rq_app.app_context():
            assert tasks.reap(rq_app).requeued == []
        assert row(rq_app, job_id).status == "running"
        first.kill()
    assert api_job(client, job_id)["status"] == "running"  # nothing has noticed yet

    redis_client.set(gate, 1, ex=60)
    # A long-running worker: its periodic maintenance finds the abandoned job, re-queues it, then runs it.
    with flask_worker(env, tmp_path, burst=False, name=f"{worker}-second") as second:
        wait_until(lambda: row(rq_app, job_id).status == "succeeded", timeout=30,
                   message="the job to complete on the second worker")
        log = second.logs()
    done = api_job(client, job_id)
    assert (done["attempts"], done["result"], done["error"]) == (2, {"gate": gate, "attempt": 2}, None)
    assert f"job {job_id} attempt 1: worker lost" in log and "-> requeued" in log


def test_worker_killed_mid_job_without_retries_leaves_it_failed_not_running(
        rq_app, schema, worker, redis_url, tmp_path):
    client = rq_app.test_client()
    env = worker_env(schema, worker, redis_url, JOBS_HEARTBEAT_SECONDS=0.2, JOBS_ABANDONED_AFTER=1)
    job_id = enqueue(rq_app, "test.gated", {"gate": f"lunaos-test-{worker}:never", "redis_url": redis_url})
    with flask_worker(env, tmp_path, name=f"{worker}-doomed") as doomed:
        wait_until(lambda: row(rq_app, job_id).status == "running", message="the job to start")
        doomed.kill()

    runner = rq_app.test_cli_runner()
    wait_until(lambda: "1 failed" in runner.invoke(args=["jobs", "reap"]).output, message="`flask jobs reap`")
    job = api_job(client, job_id)
    assert job["status"] == "failed" and job["error"].startswith("worker lost") and job["finished_at"]
