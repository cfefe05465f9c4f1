"""Runs as jobs: streamed output and step status, replay, cancellation, and an RQ worker running them."""
from __future__ import annotations

import pytest

from tests.conftest import base_config
from tests.support.identity import bearer, error_of, make_admin
from tests.support.servers import SSEReader, flask_worker, forget_rq_state, subprocess_env, wait_until

from .conftest import plan, run, run_ok


def events_of(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    events = SSEReader(response.response).events_until(lambda e: e["event"] == "done")
    response.close()
    return events


@pytest.mark.db
def test_stream_sends_step_status_and_output_lines_then_done(client, admin):
    task = plan(client, admin, "run: echo alpha; echo beta >&2; echo gamma")
    events = events_of(run(client, admin, task, stream=True, buffered=False))
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "done"
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    steps = [e["data"] for e in events if e["event"] == "step"]
    assert [(s["step_id"], s["status"]) for s in steps] == [(1, "running"), (1, "completed")]
    lines = {(e["data"]["stream"], line) for e in events if e["event"] == "output" for line in e["data"]["lines"]}
    assert lines == {("stdout", "alpha"), ("stderr", "beta"), ("stdout", "gamma")}
    done = events[-1]["data"]
    assert done["overall_status"] == "completed" and done["results"][0]["output"] == "alpha\ngamma\n"
    # The stored events replay identically, and from any point.
    replay = events_of(client.get(f"/v1/executor/runs/{done['run_id']}/events", headers=bearer(admin),
                                  buffered=False))
    assert replay == events
    tail = events_of(client.get(f"/v1/executor/runs/{done['run_id']}/events", headers={
        **bearer(admin), "Last-Event-ID": events[-2]["id"]}, buffered=False))
    assert tail == events[-1:]


@pytest.mark.db
def test_cancel_stops_a_running_step_and_its_processes(client, admin, workspaces):
    task = plan(client, admin, "run: sleep 25; touch late.txt")
    response = run(client, admin, task, stream=True, confirm=True, buffered=False)
    reader = SSEReader(response.response)
    assert reader.next_event()["event"] == "start"
    assert reader.next_event()["data"]["status"] == "running"
    cancelled = client.post(f"/v1/executor/tasks/{task['task_id']}/cancel", headers=bearer(admin))
    assert cancelled.status_code == 200, cancelled.get_data(as_text=True)
    rest = reader.events_until(lambda e: e["event"] == "done")
    response.close()
    done = rest[-1]["data"]
    assert done["overall_status"] == "cancelled" and done["results"][0]["status"] == "cancelled"
    assert not any(workspaces.rglob("late.txt"))
    error_of(client.post(f"/v1/executor/tasks/{task['task_id']}/cancel", headers=bearer(admin)), 409, "NOT_RUNNING")
    detail = client.get(f"/v1/executor/tasks/{task['task_id']}", headers=bearer(admin)).get_json()["data"]
    assert detail["status"] == "cancelled" and detail["runs"][0]["status"] == "cancelled"


@pytest.mark.db
def test_one_run_of_a_task_at_a_time(client, admin):
    task = plan(client, admin, "run: sleep 25")
    response = run(client, admin, task, stream=True, buffered=False)
    reader = SSEReader(response.response)
    assert reader.next_event()["event"] == "start"
    error_of(run(client, admin, task), 409, "TASK_RUNNING")
    client.post(f"/v1/executor/tasks/{task['task_id']}/cancel", headers=bearer(admin))
    reader.events_until(lambda e: e["event"] == "done")
    response.close()


def test_a_long_run_answers_202_and_finishes_in_the_background(make_app, tmp_path):
    app = make_app(EXECUTOR_ENABLED=True, LLM_OFFLINE=False, LLM_PROVIDERS=[], EXECUTOR_SYNC_WAIT_SECONDS=0.2,
                   EXECUTOR_WORKSPACE=str(tmp_path / "ws"))
    client = app.test_client()
    session = make_admin(app, client)
    task = plan(client, session, "run: sleep 1; echo finished")
    response = run(client, session, task)
    assert response.status_code == 202, response.get_data(as_text=True)
    data = response.get_json()["data"]
    assert data["status"] in ("queued", "running") and data["overall_status"] in ("queued", "running")

    def finished():
        body = client.get(f"/v1/executor/runs/{data['run_id']}", headers=bearer(session)).get_json()["data"]
        return body if body["status"] not in ("queued", "running") else None

    final = wait_until(finished, timeout=30, interval=0.1, message="the run to finish")
    assert final["overall_status"] == "completed" and final["results"][0]["output"] == "finished\n"


@pytest.mark.db
@pytest.mark.slow
def test_an_rq_worker_runs_the_steps_and_events_cross_processes(make_app, schema, worker, redis_url, redis_client,
                                                                 tmp_path):
    config = {"REDIS_URL": redis_url, "LLM_OFFLINE": False, "EXECUTOR_ENABLED": True,
              "EXECUTOR_WORKSPACE": str(tmp_path / "ws")}
    app = make_app(**config, LLM_PROVIDERS=[])
    client = app.test_client()
    session = make_admin(app, client)
    task = plan(client, session, "run: echo from-the-worker; echo $$")
    env = subprocess_env({**base_config(schema, worker), **config})
    try:
        with flask_worker(env, tmp_path, burst=False, name=f"{worker}-executor") as process:
            events = events_of(run(client, session, task, stream=True, buffered=False))
            assert events[-1]["event"] == "done", process.logs()
            result = events[-1]["data"]["results"][0]
            assert result["status"] == "completed" and result["output"].startswith("from-the-worker\n")
            job_id = None
            with app.app_context():
                from app.extensions import db
                from plugins.executor.models import ExecutorRun

                job_id = db.session.get(ExecutorRun, events[0]["data"]["run_id"]).job_id
            wait_until(lambda: f"executor.run {job_id}" in process.logs(), timeout=10,
                       message="the worker's log of the job")
            sync = run_ok(client, session, task)  # `stream: false` waits on events from the worker, too
            assert sync["overall_status"] == "completed"
    finally:
        forget_rq_state(redis_client, app)


def test_a_run_the_queue_cannot_take_is_failed_not_left_queued(make_app, tmp_path):
    from app.errors import ServiceUnavailable
    from app.extensions import db
    from app.security import Principal
    from plugins.executor import runs, service
    from plugins.executor.models import ExecutorRun
    from tests.support.identity import create_user
    from tests.support.servers import free_port

    app = make_app(EXECUTOR_ENABLED=True, LLM_OFFLINE=False, LLM_PROVIDERS=[], EXECUTOR_WORKSPACE=str(tmp_path / "ws"),
                   REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    user_id = create_user(app, "queue@example.com", role="admin")
    principal = Principal(kind="user", id=user_id, user_id=user_id, role="admin", scopes=frozenset({"*"}))
    with app.test_request_context():
        task = service.create_plan(principal, "run: echo hi", {})
        steps = service.check_run(principal, task, [{"id": 1, "command": "echo hi"}], confirm=False)
        with pytest.raises(ServiceUnavailable):
            runs.create(principal, task, steps, confirm=False)
        db.session.expire_all()
        (stored,) = db.session.query(ExecutorRun).all()
        assert stored.status == "failed" and "queue is unavailable" in stored.error
        with pytest.raises(ServiceUnavailable):  # not TASK_RUNNING: the failed run does not hold the task
            runs.create(principal, task, steps, confirm=False)
