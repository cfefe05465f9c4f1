"""Executions without a model: 503 when none is configured, the event log and its replay, owner checks."""
from __future__ import annotations

import pytest

from tests.support.identity import bearer, error_of, without_request_id
from tests.support.servers import SSEReader

from .conftest import make_agent
from .test_flows import BRANCHING

pytestmark = pytest.mark.db


def test_model_routes_answer_503_when_no_provider_is_configured(client, alice):
    agent = make_agent(client, alice)
    calls = [
        ("/v1/agents/execute", {"agent": "code-reviewer", "input": "def f(): pass"}),
        ("/v1/agents/execute", {"agent": agent["id"], "input": "hi", "stream": False}),
        (f"/v1/agents/{agent['id']}/messages", {"text": "hello"}),
        ("/v1/agents/code-reviewer/messages", {"text": "hello", "stream": True}),
        ("/v1/chains/execute", {"chain": "find-and-fix", "input": "x = 1/0"}),
    ]
    for path, body in calls:
        error = error_of(client.post(path, json=body, headers=bearer(alice)), 503, "LLM_UNAVAILABLE")
        assert "LUNAOS_LLM_PROVIDERS" in error["message"]
    flow = client.post("/v1/agents/flows", json={
        "name": "needs a model", "nodes": [{"id": "in", "type": "input"},
                                           {"id": "ask", "type": "llm", "config": {"prompt": "{input}"}},
                                           {"id": "out", "type": "output"}],
        "edges": [{"source": "in", "target": "ask"}, {"source": "ask", "target": "out"}]}, headers=bearer(alice))
    assert flow.status_code == 201  # saving needs no model; running does
    error_of(client.post(f"/v1/agents/flows/{flow.get_json()['data']['id']}/execute", json={"input": "x"},
                         headers=bearer(alice)), 503, "LLM_UNAVAILABLE")
    # Nothing was started.
    assert client.get("/v1/executions", headers=bearer(alice)).get_json()["data"] == []


def test_request_validation_comes_before_the_model_check(client, alice):
    for path, body, field in (
        ("/v1/agents/execute", {"agent": "code-reviewer"}, "input"),
        ("/v1/agents/execute", {"agent": "code-reviewer", "input": ""}, "input"),
        ("/v1/agents/execute", {"agent": "code-reviewer", "input": "x", "temperature": -1}, "temperature"),
        ("/v1/agents/execute", {"agent": "nobody", "input": "x"}, "agent"),
        ("/v1/agents/execute", {"agent": "code-reviewer", "input": "x", "context": "nope"}, "context"),
        ("/v1/agents/code-reviewer/messages", {"text": ""}, "text"),
        ("/v1/agents/code-reviewer/messages", {"text": "x", "max_tokens": 0}, "max_tokens"),
    ):
        error = error_of(client.post(path, json=body, headers=bearer(alice)), 422, "VALIDATION_ERROR")
        assert field in error["details"]["fields"], (body, error)
    error_of(client.post("/v1/agents/agt_00000000000000000000000000/messages", json={"text": "x"},
                         headers=bearer(alice)), 404, "NOT_FOUND")


def run_flow(client, session, text="urgent: disk full"):
    flow = client.post("/v1/agents/flows", json=BRANCHING, headers=bearer(session)).get_json()["data"]
    response = client.post(f"/v1/agents/flows/{flow['id']}/execute", json={"input": text, "stream": False},
                           headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def read_events(client, session, execution_id, **headers):
    response = client.get(f"/v1/executions/{execution_id}/events", headers={**bearer(session), **headers},
                          buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = SSEReader(response.response).events_until(lambda e: e["event"] in ("done", "error"))
    response.close()
    return events


def test_events_replay_from_the_start_and_after_last_event_id(client, alice):
    run = run_flow(client, alice)
    assert run["last_event_id"] > 3
    events = read_events(client, alice, run["id"])
    assert [int(e["id"]) for e in events] == list(range(1, run["last_event_id"] + 1))
    assert events[0] == {"event": "start", "id": "1", "data": {
        "execution_id": run["id"], "kind": "flow", "target": {"id": run["target_id"], "name": "Triage"}}}
    assert events[-1]["event"] == "done" and events[-1]["data"]["output"] == run["output"]

    resumed = read_events(client, alice, run["id"], **{"Last-Event-ID": "3"})
    assert resumed == events[3:]
    by_query = client.get(f"/v1/executions/{run['id']}/events?after=5", headers=bearer(alice), buffered=False)
    assert SSEReader(by_query.response).events_until(lambda e: e["event"] == "done") == events[5:]


def test_executions_are_listed_and_read_by_their_owner_only(client, alice, bob):
    run = run_flow(client, alice)
    mine = client.get("/v1/executions?kind=flow&status=succeeded", headers=bearer(alice)).get_json()
    assert [e["id"] for e in mine["data"]] == [run["id"]]
    assert client.get("/v1/executions?kind=agent", headers=bearer(alice)).get_json()["data"] == []
    got = client.get(f"/v1/executions/{run['id']}", headers=bearer(alice)).get_json()["data"]
    assert got == run
    assert got["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    unknown = "exe_" + "0" * 26
    for method, suffix in (("get", ""), ("get", "/events"), ("post", "/cancel")):
        other = getattr(client, method)(f"/v1/executions/{run['id']}{suffix}", headers=bearer(bob))
        missing = getattr(client, method)(f"/v1/executions/{unknown}{suffix}", headers=bearer(bob))
        error_of(other, 404, "NOT_FOUND")
        assert without_request_id(other) == without_request_id(missing)
    assert client.get("/v1/executions", headers=bearer(bob)).get_json()["data"] == []


def test_a_finished_execution_cannot_be_cancelled(client, alice):
    run = run_flow(client, alice)
    error = error_of(client.post(f"/v1/executions/{run['id']}/cancel", headers=bearer(alice)), 409,
                     "EXECUTION_FINISHED")
    assert error["details"]["status"] == "succeeded"


def test_execution_events_reach_the_domain_event_bus(agents_app, client, alice):
    from app import events

    seen = []
    events.subscribe(agents_app, "agent.execution.*", lambda event: seen.append((event.type, event.owner_id)))
    run_flow(client, alice)
    assert seen == [("agent.execution.started", alice["user"]["id"]),
                    ("agent.execution.completed", alice["user"]["id"])]


def test_model_routes_count_against_the_gateways_ai_budget(make_app):
    from app.plugins import active
    from tests.support.identity import signup

    app = make_app(LLM_OFFLINE=False, LLM_PROVIDERS=[], RATELIMIT_AI_FREE="2/hour")
    if "ai" not in {plugin.name for plugin in active(app)}:
        pytest.skip("the ai plugin (which defines the budget) is not loaded")
    client = app.test_client()
    session = signup(client, "budget@example.com")
    body = {"agent": "code-reviewer", "input": "x"}
    for _ in range(2):
        assert client.post("/v1/agents/execute", json=body, headers=bearer(session)).status_code in (422, 503)
    error = error_of(client.post("/v1/chains/execute", json={"chain": "find-and-fix", "input": "x"},
                                 headers=bearer(session)), 429, "RATE_LIMIT_EXCEEDED")
    assert error["details"]["group"] == "ai"
    assert client.get("/v1/agents", headers=bearer(session)).status_code == 200  # reading is not a model call
