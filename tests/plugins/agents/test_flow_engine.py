"""The flow engine: retries with backoff, per-node timeouts, error branches, global limits, human_input pauses
and resumes, node-run records, branches running side by side, and runs pinned to a version.

Search nodes get a retriever registered by the test (it stands in for the rag plugin) and model nodes a
scripted provider kind (it stands in for an upstream model): both let a test make a node fail, hang or
meet another node, with no timing assumptions.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from app import llm, retrieval
from tests.support.identity import bearer, error_of, signup, without_request_id
from tests.support.servers import SSEReader

from .conftest import seed, without_retriever
from .test_flows import BRANCHING, edge, node, save

pytestmark = pytest.mark.db


def execute(client, session, flow_id, body_input="q", status=200, **body):
    response = client.post(f"/v1/agents/flows/{flow_id}/execute", json={"input": body_input, "stream": False, **body},
                           headers=bearer(session))
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["data"]


def failed_run(client, session, flow_id, status, code):
    error = error_of(client.post(f"/v1/agents/flows/{flow_id}/execute", json={"input": "q", "stream": False},
                                 headers=bearer(session)), status, code)
    return error, get(client, session, error["details"]["execution_id"])


def get(client, session, execution_id):
    response = client.get(f"/v1/executions/{execution_id}", headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def wait_for(client, session, execution_id, statuses=("succeeded", "failed", "cancelled", "timed_out")):
    """Poll until the execution reaches one of `statuses` (a resumed run goes on in a background job)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        execution = get(client, session, execution_id)
        if execution["status"] in statuses:
            return execution
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} still {execution['status']}")


def node_runs(client, session, execution_id):
    response = client.get(f"/v1/executions/{execution_id}/nodes?per_page=100", headers=bearer(session))
    assert response.status_code == 200, response.get_data(as_text=True)
    return {run["node_id"]: run for run in response.get_json()["data"]}


def steps_of(execution):
    return {step["node_id"]: step for step in execution["steps"]}


def search_flow(name="search", **find):
    return {"name": name, "nodes": [node("in", "input"), {**node("find", "rag_search"), **find}, node("out", "output")],
            "edges": [edge("in", "find"), edge("find", "out")]}


def events_of(client, session, execution_id, until=("done", "error"), last_event_id=None):
    headers = {**bearer(session), **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    response = client.get(f"/v1/executions/{execution_id}/events", headers=headers, buffered=False)
    assert response.status_code == 200
    events = SSEReader(response.response).events_until(lambda e: e["event"] in until)
    response.close()
    return events


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds a retriever or model call until the test ends, so a node can be made to hang."""
    event = threading.Event()
    yield event
    event.set()


# --- retries, timeouts, error branches ------------------------------------------------------------

def test_transient_failures_are_retried_with_exponential_backoff(agents_app, client, alice):
    calls = []

    def flaky(owner_id, query, top_k, **filters):
        calls.append(query)
        if len(calls) < 3:
            raise llm.LLMUpstreamError("embedding service hiccup")
        return [{"content": "found it", "score": 1.0}]

    retrieval.register_retriever(agents_app, flaky)
    flow = save(client, alice, search_flow(max_retries=2, backoff=0.01))["data"]
    run = execute(client, alice, flow["id"])
    assert run["status"] == "succeeded" and run["output"] == "[1]\nfound it" and len(calls) == 3
    assert steps_of(run)["find"]["attempts"] == 3
    retrying = [e["data"] for e in events_of(client, alice, run["id"]) if e["event"] == "step"
                and e["data"]["status"] == "retrying"]
    assert [(r["node_id"], r["attempt"], r["delay"]) for r in retrying] == [("find", 1, 0.01), ("find", 2, 0.02)]
    assert retrying[0]["error"].startswith("LLM_UPSTREAM_ERROR")
    records = node_runs(client, alice, run["id"])
    assert records["find"]["attempts"] == 3 and records["find"]["status"] == "succeeded"
    assert records["find"]["input"] == "q" and records["find"]["output"] == "[1]\nfound it"

    calls.clear()
    flow = save(client, alice, search_flow(max_retries=1, backoff=0))["data"]
    error, run = failed_run(client, alice, flow["id"], 502, "LLM_UPSTREAM_ERROR")
    assert len(calls) == 2 and run["status"] == "failed"
    assert node_runs(client, alice, run["id"])["find"]["attempts"] == 2


def test_a_node_past_its_timeout_fails_with_node_timeout(agents_app, client, alice, gate):
    calls = []

    def hanging(owner_id, query, top_k, **filters):
        calls.append(query)
        gate.wait(30)
        return []

    retrieval.register_retriever(agents_app, hanging)
    flow = save(client, alice, search_flow(timeout=0.1))["data"]
    error, run = failed_run(client, alice, flow["id"], 504, "NODE_TIMEOUT")
    assert "'find'" in error["message"] and "0.1 s" in error["message"]
    assert run["status"] == "failed" and run["error"]["code"] == "NODE_TIMEOUT"
    assert steps_of(run)["find"]["status"] == "failed" and steps_of(run)["out"]["status"] == "pending"
    assert node_runs(client, alice, run["id"])["find"]["error"].startswith("NODE_TIMEOUT")

    # A timeout is transient: retried, then on_error decides.
    calls.clear()
    flow = save(client, alice, search_flow(timeout=0.1, max_retries=1, backoff=0, on_error="continue",
                                           default="(search timed out)"))["data"]
    run = execute(client, alice, flow["id"])
    assert run["status"] == "succeeded" and run["output"] == "(search timed out)" and len(calls) == 2
    record = node_runs(client, alice, run["id"])["find"]
    assert record["status"] == "failed" and record["attempts"] == 2 and record["output"] == "(search timed out)"


ERROR_BRANCH = {
    "name": "with a fallback",
    "nodes": [node("in", "input"), {**node("find", "rag_search"), "on_error": "branch"},
              node("answer", "output", template="Sources: {previous}"),
              node("sorry", "output", template="Search failed ({previous})")],
    "edges": [edge("in", "find"), edge("find", "answer"), edge("find", "sorry", "error")],
}


def test_on_error_branch_follows_the_error_edges(agents_app, client, alice):
    outcome = {"fail": True}

    def retriever(owner_id, query, top_k, **filters):
        if outcome["fail"]:
            raise LookupError("the index is being rebuilt")
        return [{"content": "doc", "score": 1.0}]

    retrieval.register_retriever(agents_app, retriever)
    flow = save(client, alice, ERROR_BRANCH)["data"]
    run = execute(client, alice, flow["id"])
    assert run["status"] == "succeeded" and run["output"] == "Search failed (the index is being rebuilt)"
    steps = steps_of(run)
    assert steps["find"]["status"] == "failed" and steps["find"]["branch"] == "error"
    assert steps["answer"]["status"] == "skipped" and steps["sorry"]["status"] == "succeeded"

    outcome["fail"] = False
    run = execute(client, alice, flow["id"])
    assert run["output"] == "Sources: [1]\ndoc"
    assert steps_of(run)["sorry"]["status"] == "skipped"


def test_error_edges_are_validated(client, alice):
    def invalid(graph):
        return error_of(client.post("/v1/agents/flows", json=graph, headers=bearer(alice)), 422,
                        "VALIDATION_ERROR")

    without_edge = {**ERROR_BRANCH, "edges": ERROR_BRANCH["edges"][:2] + [edge("find", "sorry")]}
    error = invalid(without_edge)
    assert "needs an outgoing edge labelled 'error'" in error["details"]["fields"]["nodes.1.on_error"][0]
    assert error["details"]["nodes"] == ["find"]

    not_branching = {**ERROR_BRANCH, "nodes": [ERROR_BRANCH["nodes"][0], node("find", "rag_search"),
                                               *ERROR_BRANCH["nodes"][2:]]}
    error = invalid(not_branching)
    assert "does not set on_error 'branch'" in error["details"]["fields"]["edges.2.label"][0]

    for bad in ({"on_error": "retry"}, {"timeout": 0}, {"backoff": -1}, {"backoff": 31}, {"max_retries": 6}):
        graph = search_flow(**bad)
        error = invalid(graph)
        assert "nodes.1." + next(iter(bad)) in " ".join(error["details"]["fields"]), (bad, error)


# --- global limits -------------------------------------------------------------------------------

def test_the_step_limit_ends_a_run(make_app):
    app = without_retriever(make_app(LLM_OFFLINE=False, LLM_PROVIDERS=[], AGENTS_FLOW_MAX_STEPS=2))
    client = app.test_client()
    session = signup(client, "steps@example.com")
    flow = save(client, session, BRANCHING)["data"]
    error, run = failed_run(client, session, flow["id"], 422, "FLOW_STEP_LIMIT")
    assert "AGENTS_FLOW_MAX_STEPS (2)" in error["message"]
    assert run["status"] == "failed" and run["error"]["code"] == "FLOW_STEP_LIMIT"
    steps = steps_of(run)
    assert [steps[n]["status"] for n in ("in", "check", "queue")] == ["succeeded", "succeeded", "failed"]


def test_the_time_limit_ends_a_run_timed_out(make_app, gate):
    app = without_retriever(make_app(LLM_OFFLINE=False, LLM_PROVIDERS=[], AGENTS_FLOW_MAX_SECONDS=0.2))
    client = app.test_client()
    session = signup(client, "clock@example.com")
    retrieval.register_retriever(app, lambda owner_id, query, top_k, **filters: gate.wait(30) and [])
    flow = save(client, session, search_flow())["data"]
    error, run = failed_run(client, session, flow["id"], 504, "TIMED_OUT")
    assert "AGENTS_FLOW_MAX_SECONDS" in error["message"]
    assert run["status"] == "timed_out"
    assert steps_of(run)["find"]["status"] == "cancelled"
    assert node_runs(client, session, run["id"])["find"]["status"] == "cancelled"


# --- human input ----------------------------------------------------------------------------------

APPROVAL = {
    "name": "Approval",
    "nodes": [node("in", "input"), node("find", "rag_search"),
              node("ask", "human_input", prompt="Publish this? {previous}"),
              node("out", "output", template="{nodes.find} | decision: {previous}")],
    "edges": [edge("in", "find"), edge("find", "ask"), edge("ask", "out")],
}


@pytest.fixture
def searches(agents_app):
    calls = []

    def retriever(owner_id, query, top_k, **filters):
        calls.append(query)
        return [{"content": f"draft about {query}", "score": 1.0}]

    retrieval.register_retriever(agents_app, retriever)
    return calls


def test_human_input_pauses_and_resume_continues_without_rerunning_nodes(client, alice, bob, searches):
    flow = save(client, alice, APPROVAL)["data"]
    run = execute(client, alice, flow["id"], "release notes")
    assert run["status"] == "waiting_input" and run["output"] is None and run["finished_at"] is None
    assert run["waiting"] == {"node_id": "ask", "prompt": "Publish this? [1]\ndraft about release notes"}
    assert get(client, alice, run["id"]) == run
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded", "waiting", "pending"]
    listed = client.get("/v1/executions?status=waiting_input", headers=bearer(alice)).get_json()["data"]
    assert [e["id"] for e in listed] == [run["id"]]
    records = node_runs(client, alice, run["id"])
    assert {n: r["status"] for n, r in records.items()} == {"in": "succeeded", "find": "succeeded", "ask": "waiting"}

    # Only the owner can resume; to anyone else it does not exist.
    path = f"/v1/executions/{run['id']}/resume"
    other = client.post(path, json={"input": "yes"}, headers=bearer(bob))
    missing = client.post("/v1/executions/exe_" + "0" * 26 + "/resume", json={"input": "yes"}, headers=bearer(bob))
    error_of(other, 404, "NOT_FOUND")
    assert without_request_id(other) == without_request_id(missing)
    error_of(client.get(f"/v1/executions/{run['id']}/nodes", headers=bearer(bob)), 404, "NOT_FOUND")
    error_of(client.post(path, json={}, headers=bearer(alice)), 422, "VALIDATION_ERROR")

    resumed = client.post(path, json={"input": {"message": "yes, ship it"}}, headers=bearer(alice))
    assert resumed.status_code == 202, resumed.get_data(as_text=True)
    assert resumed.get_json()["data"]["status"] in ("queued", "running", "succeeded")
    done = wait_for(client, alice, run["id"])
    assert done["status"] == "succeeded" and done["waiting"] is None
    assert done["output"] == "[1]\ndraft about release notes | decision: yes, ship it"
    assert done["started_at"] == run["started_at"]
    assert searches == ["release notes"]  # the search before the pause ran once
    records = node_runs(client, alice, run["id"])
    assert list(records) == ["in", "find", "ask", "out"]
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in records.values())
    assert records["ask"]["output"] == "yes, ship it" and records["ask"]["finished_at"] is not None

    again = error_of(client.post(path, json={"input": "no"}, headers=bearer(alice)), 409, "NOT_WAITING")
    assert again["details"]["status"] == "succeeded"

    # The whole log replays past the pause to the end.
    events = events_of(client, alice, run["id"])
    names = [e["event"] for e in events]
    assert names.index("waiting_input") < names.index("resumed") < names.index("done") == len(names) - 1
    waiting = events[names.index("waiting_input")]["data"]
    assert waiting["node_id"] == "ask" and waiting["pause"] == 1
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))


def test_a_streamed_run_ends_at_the_pause_and_the_log_follows_the_resume(client, alice, searches):
    flow = save(client, alice, APPROVAL)["data"]
    response = client.post(f"/v1/agents/flows/{flow['id']}/execute", json={"input": "x"}, headers=bearer(alice),
                           buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    reader = SSEReader(response.response)
    events = reader.events_until(lambda e: e["event"] == "waiting_input")
    assert reader.next_event() is None  # the stream ended there
    execution_id = events[0]["data"]["execution_id"]
    assert events[-1]["data"]["prompt"] == "Publish this? [1]\ndraft about x"
    # Read while waiting, the log also ends at the pause.
    assert events_of(client, alice, execution_id, until=("waiting_input",)) == events

    assert client.post(f"/v1/executions/{execution_id}/resume", json={"input": "ok"},
                       headers=bearer(alice)).status_code == 202
    rest = events_of(client, alice, execution_id, last_event_id=events[-1]["id"])
    assert rest[0]["event"] == "resumed" and rest[0]["data"] == {"node_id": "ask", "pause": 1}
    assert rest[-1]["event"] == "done" and rest[-1]["data"]["output"].endswith("decision: ok")
    assert ("ask", "finished") in [(e["data"]["node_id"], e["data"]["status"]) for e in rest if e["event"] == "step"]


def test_a_waiting_execution_can_be_cancelled(client, alice, searches):
    flow = save(client, alice, APPROVAL)["data"]
    run = execute(client, alice, flow["id"])
    cancelled = client.post(f"/v1/executions/{run['id']}/cancel", headers=bearer(alice))
    assert cancelled.status_code == 200
    run = cancelled.get_json()["data"]
    assert run["status"] == "cancelled" and run["error"]["code"] == "CANCELLED" and run["waiting"] is None
    assert steps_of(run)["ask"]["status"] == "cancelled"
    assert node_runs(client, alice, run["id"])["ask"]["status"] == "cancelled"
    error = error_of(client.post(f"/v1/executions/{run['id']}/resume", json={"input": "yes"},
                                 headers=bearer(alice)), 409, "NOT_WAITING")
    assert error["details"]["status"] == "cancelled"
    assert events_of(client, alice, run["id"])[-1]["data"]["code"] == "CANCELLED"


def test_two_human_inputs_pause_one_after_the_other(client, alice, searches):
    graph = {"name": "two approvals",
             "nodes": [node("in", "input"), node("legal", "human_input", prompt="Legal ok?", field="answer"),
                       node("brand", "human_input", prompt="Brand ok?"),
                       node("out", "output", template="{nodes.legal}/{nodes.brand}")],
             "edges": [edge("in", "legal"), edge("in", "brand"), edge("legal", "out"), edge("brand", "out")]}
    flow = save(client, alice, graph)["data"]
    run = execute(client, alice, flow["id"])
    assert run["waiting"]["node_id"] == "legal"
    assert {n: s["status"] for n, s in steps_of(run).items()} == {"in": "succeeded", "legal": "waiting",
                                                                  "brand": "waiting", "out": "pending"}
    client.post(f"/v1/executions/{run['id']}/resume", json={"input": {"answer": "yes"}}, headers=bearer(alice))
    run = wait_for(client, alice, run["id"], ("waiting_input",))
    assert run["waiting"] == {"node_id": "brand", "prompt": "Brand ok?"}
    client.post(f"/v1/executions/{run['id']}/resume", json={"input": "fine"}, headers=bearer(alice))
    run = wait_for(client, alice, run["id"])
    assert run["output"] == "yes/fine"
    records = node_runs(client, alice, run["id"])
    assert sorted(records) == ["brand", "in", "legal", "out"]  # one record each, however often the run paused
    assert [e["data"]["pause"] for e in events_of(client, alice, run["id"]) if e["event"] == "resumed"] == [1, 2]


def test_human_input_needs_a_prompt(client, alice):
    graph = {"name": "x", "nodes": [node("in", "input"), node("ask", "human_input"), node("out", "output")],
             "edges": [edge("in", "ask"), edge("ask", "out")]}
    error = error_of(client.post("/v1/agents/flows", json=graph, headers=bearer(alice)), 422, "VALIDATION_ERROR")
    assert "config.prompt is required" in error["details"]["fields"]["nodes.1.config"][0]


# --- concurrency ----------------------------------------------------------------------------------

def test_independent_branches_run_at_the_same_time_and_the_join_sees_both(agents_app, client, alice):
    meeting = threading.Barrier(2, timeout=20)  # breaks unless both searches are in flight together

    def retriever(owner_id, query, top_k, **filters):
        meeting.wait()
        return [{"content": f"about {query}", "score": 1.0}]

    retrieval.register_retriever(agents_app, retriever)
    graph = {"name": "fan out",
             "nodes": [node("in", "input"), node("left", "rag_search", query="L {input}"),
                       node("right", "rag_search", query="R {input}"),
                       node("join", "output", template="{previous}")],
             "edges": [edge("in", "left"), edge("in", "right"), edge("left", "join"), edge("right", "join")]}
    flow = save(client, alice, graph)["data"]
    run = execute(client, alice, flow["id"], "x")
    assert run["status"] == "succeeded", run["error"]
    assert run["output"] == "[1]\nabout L x\n\n[1]\nabout R x"  # sources in graph order, whichever finished first
    records = node_runs(client, alice, run["id"])
    assert records["join"]["input"] == run["output"]
    events = events_of(client, alice, run["id"])
    steps = [(e["data"]["node_id"], e["data"]["status"]) for e in events if e["event"] == "step"]
    assert steps[2:4] == [("left", "started"), ("right", "started")]
    assert set(steps[4:6]) == {("left", "finished"), ("right", "finished")}
    assert steps[6:] == [("join", "started"), ("join", "finished")]


# --- model nodes -----------------------------------------------------------------------------------

class ScriptedModel(llm.Provider):
    """An upstream stand-in: answers `echo: <prompt>` in two deltas; a prompt with HANG waits for the gate."""

    kind = "scripted"
    gate = threading.Event()

    def chat(self, request):
        raise NotImplementedError

    def stream(self, request):
        prompt = request.messages[-1].content
        if "HANG" in prompt:
            self.gate.wait(30)
        yield llm.StreamChunk(delta="echo: ")
        yield llm.StreamChunk(delta=prompt, finish_reason="stop", usage=llm.Usage(prompt_tokens=5, completion_tokens=3))


@pytest.fixture
def model_app(make_app):
    llm.register_kind("scripted", ScriptedModel, replace=True)
    ScriptedModel.gate.clear()
    app = without_retriever(make_app(LLM_OFFLINE=False, LLM_PROVIDERS=[
        {"name": "scripted", "type": "scripted", "models": ["scripted-1"]}]))
    seed(app)
    yield app
    ScriptedModel.gate.set()
    llm.unregister_kind("scripted")


def test_model_nodes_time_out_and_branch_on_error_with_tokens_recorded(model_app):
    client = model_app.test_client()
    session = signup(client, "model@example.com")
    graph = {"name": "draft",
             "nodes": [node("in", "input"),
                       {**node("draft", "llm", prompt="{input}"), "timeout": 0.2, "on_error": "branch"},
                       node("ok", "output"), node("fallback", "output", template="fallback: {previous}")],
             "edges": [edge("in", "draft"), edge("draft", "ok"), edge("draft", "fallback", "error")]}
    flow = save(client, session, graph)["data"]
    run = execute(client, session, flow["id"], "hello")
    assert run["status"] == "succeeded" and run["output"] == "echo: hello"
    assert run["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    record = node_runs(client, session, run["id"])["draft"]
    assert record["usage"] == run["usage"] and record["output"] == "echo: hello"

    run = execute(client, session, flow["id"], "HANG please")
    assert run["status"] == "succeeded"
    assert run["output"].startswith("fallback: NODE_TIMEOUT: Node 'draft' took longer than its timeout of 0.2 s")
    assert steps_of(run)["ok"]["status"] == "skipped"
    assert node_runs(client, session, run["id"])["draft"]["status"] == "failed"


# --- versions ----------------------------------------------------------------------------------

def test_runs_are_pinned_to_a_version_and_may_name_one(client, alice):
    flow = save(client, alice, BRANCHING)["data"]
    nodes = [dict(n) for n in BRANCHING["nodes"]]
    nodes[2] = node("page", "output", template="v2 PAGE: {input}")
    assert client.patch(f"/v1/agents/flows/{flow['id']}", json={"nodes": nodes},
                        headers=bearer(alice)).get_json()["data"]["version"] == 2
    latest = execute(client, alice, flow["id"], "urgent")
    assert latest["flow_version"] == 2 and latest["output"] == "v2 PAGE: urgent"
    pinned = execute(client, alice, flow["id"], "urgent", version=1)
    assert pinned["flow_version"] == 1 and pinned["output"] == "PAGE ON-CALL: urgent"
    error = error_of(client.post(f"/v1/agents/flows/{flow['id']}/execute",
                                 json={"input": "x", "stream": False, "version": 9}, headers=bearer(alice)),
                     422, "VALIDATION_ERROR")
    assert "no version 9" in error["details"]["fields"]["version"][0]
