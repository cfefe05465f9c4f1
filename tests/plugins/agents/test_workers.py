"""Executions as jobs: on a real RQ worker (`flask worker`) with events fanned out through Redis, and
unaffected by a client that goes away."""
from __future__ import annotations

import pytest

from tests.conftest import base_config
from tests.support.identity import bearer, signup
from tests.support.llm_server import llm_providers
from tests.support.servers import SSEReader, flask_worker, forget_rq_state, subprocess_env, wait_until

from .conftest import make_agent, seed, without_retriever
from .test_flows import BRANCHING

pytestmark = pytest.mark.slow


def events_of(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return SSEReader(response.response).events_until(lambda e: e["event"] in ("done", "error"))


@pytest.mark.db
def test_an_rq_worker_runs_the_execution_and_events_cross_processes(make_app, schema, worker, redis_url,
                                                                     redis_client, tmp_path):
    config = {"REDIS_URL": redis_url, "LLM_OFFLINE": False}
    app = without_retriever(make_app(**config))
    client = app.test_client()
    session = signup(client, "worker@example.com")
    flow = client.post("/v1/agents/flows", json=BRANCHING, headers=bearer(session)).get_json()["data"]
    env = subprocess_env({**base_config(schema, worker), **config})
    try:
        with flask_worker(env, tmp_path, burst=False, name=f"{worker}-agents") as process:
            response = client.post(f"/v1/agents/flows/{flow['id']}/execute", json={"input": "urgent: pager"},
                                   headers=bearer(session), buffered=False)
            events = events_of(response)
            assert events[-1]["event"] == "done", process.logs()
            assert events[-1]["data"]["output"] == "PAGE ON-CALL: urgent: pager"
            assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
            execution_id = events[0]["data"]["execution_id"]
            # The worker ran it (its log names the job), not the web process.
            run = client.get(f"/v1/executions/{execution_id}", headers=bearer(session)).get_json()["data"]
            assert run["status"] == "succeeded"
            with app.app_context():
                from app.extensions import db
                from plugins.agents.models import Execution

                job_id = db.session.get(Execution, execution_id).job_id
            wait_until(lambda: f"agents.execution {job_id}" in process.logs(), timeout=10,
                       message="the worker's log of the job")
            replay = events_of(client.get(f"/v1/executions/{execution_id}/events", headers=bearer(session),
                                          buffered=False))
            assert replay == events
    finally:
        forget_rq_state(redis_client, app)


@pytest.mark.xdist_group("llm")
def test_a_client_that_leaves_does_not_stop_the_run(make_app, llm_upstream):
    app = make_app(LLM_OFFLINE=False, LLM_PROVIDERS=llm_providers(llm_upstream))
    seed(app)
    client = app.test_client()
    session = signup(client, "leaver@example.com")
    agent = make_agent(client, session)
    response = client.post("/v1/agents/execute", json={"agent": agent["id"], "input": "Count from one to twenty.",
                                                       "max_tokens": 40}, headers=bearer(session), buffered=False)
    reader = SSEReader(response.response)
    first = [reader.next_event(), reader.next_event()]
    assert [e["event"] for e in first] == ["start", "token"]
    response.close()  # the client is gone after its first token

    execution_id = first[0]["data"]["execution_id"]

    def finished():
        data = client.get(f"/v1/executions/{execution_id}", headers=bearer(session)).get_json()["data"]
        return data if data["status"] != "running" else None

    run = wait_until(finished, timeout=60, interval=0.2, message="the execution to finish without its client")
    assert run["status"] == "succeeded"
    assert run["output"].startswith(first[1]["data"]["delta"]) and len(run["output"]) > len(first[1]["data"]["delta"])
    # Reconnecting replays everything it missed.
    events = events_of(client.get(f"/v1/executions/{execution_id}/events", headers={
        **bearer(session), "Last-Event-ID": "2"}, buffered=False))
    assert events[0]["id"] == "3" and events[-1]["event"] == "done"


@pytest.mark.db
def test_a_paused_flow_resumes_on_an_rq_worker(make_app, schema, worker, redis_url, redis_client, tmp_path):
    import threading

    config = {"REDIS_URL": redis_url, "LLM_OFFLINE": False}
    app = without_retriever(make_app(**config))
    client = app.test_client()
    session = signup(client, "pause@example.com")
    graph = {"name": "sign-off",
             "nodes": [{"id": "in", "type": "input"},
                       {"id": "ask", "type": "human_input", "config": {"prompt": "Sign off on {input}?"}},
                       {"id": "out", "type": "output", "config": {"template": "{input}: {previous}"}}],
             "edges": [{"source": "in", "target": "ask"}, {"source": "ask", "target": "out"}]}
    flow = client.post("/v1/agents/flows", json=graph, headers=bearer(session)).get_json()["data"]
    env = subprocess_env({**base_config(schema, worker), **config})
    try:
        with flask_worker(env, tmp_path, burst=False, name=f"{worker}-pause") as process:
            paused = client.post(f"/v1/agents/flows/{flow['id']}/execute", json={"input": "v2.1", "stream": False},
                                 headers=bearer(session))
            assert paused.status_code == 200, process.logs()
            run = paused.get_json()["data"]
            assert run["status"] == "waiting_input" and run["waiting"]["prompt"] == "Sign off on v2.1?"

            # A client that follows from the pause waits for the resume, then gets the rest.
            follow = client.get(f"/v1/executions/{run['id']}/events", buffered=False,
                                headers={**bearer(session), "Last-Event-ID": str(run["last_event_id"])})
            rest: list = []
            reader = threading.Thread(target=lambda: rest.extend(events_of(follow)), daemon=True)
            reader.start()
            assert client.post(f"/v1/executions/{run['id']}/resume", json={"input": "approved"},
                               headers=bearer(session)).status_code == 202
            reader.join(30)
            follow.close()
            assert rest and rest[0]["event"] == "resumed" and rest[-1]["event"] == "done", process.logs()
            assert rest[-1]["data"]["output"] == "v2.1: approved"
            done = client.get(f"/v1/executions/{run['id']}", headers=bearer(session)).get_json()["data"]
            assert done["status"] == "succeeded"
            nodes = client.get(f"/v1/executions/{run['id']}/nodes", headers=bearer(session)).get_json()
            assert [(n["node_id"], n["attempts"]) for n in nodes["data"]] == [("in", 1), ("ask", 1), ("out", 1)]
            assert nodes["pagination"]["total"] == 3
    finally:
        forget_rq_state(redis_client, app)
