"""Agents, conversations, chains and flows against a real OpenAI-compatible model server (SmolLM2 on llama.cpp).

Assertions are about structure and behaviour, never about the model's words (temperature 0, few tokens).
"""
from __future__ import annotations

import pytest

from app import llm
from tests.support.identity import bearer, create_key, error_of, without_request_id
from tests.support.llm_server import llm_providers
from tests.support.servers import SSEReader

from .conftest import RUN_SCOPES, make_agent, seed

LLM = pytest.mark.xdist_group("llm")
pytestmark = LLM

FEW = 12  # tokens per answer: enough to see streaming, cheap on a CPU


@pytest.fixture
def agents_app(make_app, llm_upstream):
    app = make_app(LLM_OFFLINE=False, LLM_PROVIDERS=llm_providers(llm_upstream), AGENTS_MAX_TOKENS=FEW)
    seed(app)
    return app


def stream_events(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    events = SSEReader(response.response).events_until(lambda e: e["event"] in ("done", "error"))
    response.close()
    return events


def usage_rows(app, user_id):
    with app.app_context():
        return llm.usage_for(user_id)


@pytest.mark.db
def test_execute_streams_start_tokens_done(agents_app, client, alice):
    agent = make_agent(client, alice)
    response = client.post("/v1/agents/execute", json={"agent": agent["id"], "input": "Say hello."},
                           headers=bearer(alice), buffered=False)
    events = stream_events(response)
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "done"
    assert set(names[1:-1]) == {"token"} and len(names) >= 3
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    execution_id = events[0]["data"]["execution_id"]
    assert execution_id.startswith("exe_")
    done = events[-1]["data"]
    assert done["output"] == "".join(e["data"]["delta"] for e in events if e["event"] == "token")
    assert done["output"].strip()
    assert done["usage"]["completion_tokens"] > 0 and done["usage"]["prompt_tokens"] > 0
    assert done["usage"]["total_tokens"] == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"]

    stored = client.get(f"/v1/executions/{execution_id}", headers=bearer(alice)).get_json()["data"]
    assert stored["status"] == "succeeded" and stored["output"] == done["output"] and stored["usage"] == done["usage"]
    assert stored["model"] == "smollm2" and stored["provider"] == "upstream-a" and stored["kind"] == "agent"
    assert stored["target_id"] == agent["id"] and stored["input"] == "Say hello."

    # The replay endpoint gives exactly what the live stream gave, then from any point on.
    replay = stream_events(client.get(f"/v1/executions/{execution_id}/events", headers=bearer(alice),
                                      buffered=False))
    assert replay == events
    resumed = stream_events(client.get(f"/v1/executions/{execution_id}/events",
                                       headers={**bearer(alice), "Last-Event-ID": "2"}, buffered=False))
    assert resumed == events[2:]


@pytest.mark.db
def test_execute_without_streaming_returns_the_finished_execution(agents_app, client, alice):
    key = create_key(client, alice, scopes=RUN_SCOPES)
    response = client.post("/v1/agents/execute", json={"agent": "commit-message-writer", "input": "fix typo in README",
                                                       "stream": False, "max_tokens": 8},
                           headers=bearer(key["key"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    run = response.get_json()["data"]
    assert run["status"] == "succeeded" and run["target_id"] == "commit-message-writer"
    assert run["output"] and run["usage"]["completion_tokens"] > 0
    assert len(run["output"]) <= 8 * 25  # the request's max_tokens (8) won over the agent's (400)
    assert run["finished_at"] and run["started_at"] and run["error"] is None
    # Usage is recorded for the user and the key that ran it.
    rows = usage_rows(agents_app, alice["user"]["id"])
    assert any(r["key_id"] == key["id"] and r["completion_tokens"] >= run["usage"]["completion_tokens"]
               for r in rows), rows


@pytest.mark.db
def test_an_unknown_model_fails_before_any_output_with_the_envelope(agents_app, client, alice):
    for stream in (True, False):
        response = client.post("/v1/agents/execute", json={"agent": "code-explainer", "input": "x = 1",
                                                           "model": "no-such-model", "stream": stream},
                               headers=bearer(alice))
        error = error_of(response, 404, "MODEL_NOT_FOUND")
        run = client.get(f"/v1/executions/{error['details']['execution_id']}", headers=bearer(alice))
        assert run.get_json()["data"]["status"] == "failed"
        assert run.get_json()["data"]["error"]["code"] == "MODEL_NOT_FOUND"


@pytest.mark.db
def test_an_upstream_that_is_down_is_an_error_before_the_stream(agents_app, client, alice, llm_upstream):
    with llm_upstream.stopped():
        error = error_of(client.post("/v1/agents/execute", json={"agent": "bug-finder", "input": "x"},
                                     headers=bearer(alice)), 502, "LLM_UPSTREAM_ERROR")
        assert error["details"]["execution_id"].startswith("exe_")


@pytest.mark.db
def test_messages_keep_the_conversation(agents_app, client, alice):
    agent = make_agent(client, alice)
    first = client.post(f"/v1/agents/{agent['id']}/messages", json={"text": "My name is Ada."}, headers=bearer(alice))
    assert first.status_code == 200, first.get_data(as_text=True)
    one = first.get_json()["data"]
    assert one["conversation_id"].startswith("cnv_") and one["message_id"].startswith("msg_")
    assert one["response"] and one["usage"]["completion_tokens"] > 0
    assert one["history"] == {"included": 0, "dropped": 0}

    second = client.post(f"/v1/agents/{agent['id']}/messages",
                         json={"text": "What is my name?", "conversation_id": one["conversation_id"]},
                         headers=bearer(alice)).get_json()["data"]
    assert second["conversation_id"] == one["conversation_id"]
    assert second["history"] == {"included": 2, "dropped": 0}  # the first question and answer went along
    assert second["usage"]["prompt_tokens"] > one["usage"]["prompt_tokens"]

    messages = client.get(f"/v1/agents/conversations/{one['conversation_id']}/messages",
                          headers=bearer(alice)).get_json()
    assert [(m["role"], m["position"]) for m in messages["data"]] == [("user", 0), ("assistant", 1), ("user", 2),
                                                                     ("assistant", 3)]
    assert messages["data"][0]["content"] == "My name is Ada."
    assert messages["data"][1]["content"] == one["response"] and messages["data"][1]["id"] == one["message_id"]
    assert messages["data"][3]["id"] == second["message_id"]

    conversations = client.get(f"/v1/agents/{agent['id']}/conversations", headers=bearer(alice)).get_json()["data"]
    assert [(c["id"], c["message_count"], c["title"], c["agent_id"]) for c in conversations] == [
        (one["conversation_id"], 4, "My name is Ada.", agent["id"])]

    # A conversation belongs to one agent: another agent cannot continue it.
    error_of(client.post("/v1/agents/code-explainer/messages",
                         json={"text": "hi", "conversation_id": one["conversation_id"]}, headers=bearer(alice)),
             404, "NOT_FOUND")


@pytest.mark.db
def test_history_is_trimmed_to_a_small_context_window(make_app, llm_upstream):
    window = 256  # the smallest window the provider settings accept
    app = make_app(LLM_OFFLINE=False, LLM_PROVIDERS=llm_providers(llm_upstream, context_window=window),
                   AGENTS_MAX_TOKENS=8)
    client = app.test_client()
    from tests.support.identity import signup

    session = signup(client, "trim@example.com")
    agent = make_agent(client, session, system_prompt="Answer with one word.")
    long_text = ("Please remember this story. The quick brown fox jumps over the lazy dog while the farmer "
                 "watches from the old wooden fence and the children laugh in the warm summer garden. Later "
                 "that evening the farmer walks back to the house, lights the lamp in the kitchen and writes a "
                 "long letter to his sister about the harvest, the weather and the price of the new tractor.")
    conversation_id = None
    results = []
    for _ in range(4):
        body = {"text": long_text, **({"conversation_id": conversation_id} if conversation_id else {})}
        response = client.post(f"/v1/agents/{agent['id']}/messages", json=body, headers=bearer(session))
        assert response.status_code == 200, response.get_data(as_text=True)
        result = response.get_json()["data"]
        conversation_id = result["conversation_id"]
        results.append(result)
        # What the model really received (counted by the upstream) fits the configured window.
        assert result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"] <= window
    assert results[-1]["history"]["dropped"] > 0
    assert results[-1]["history"]["included"] + results[-1]["history"]["dropped"] == 6
    stored = client.get(f"/v1/agents/conversations/{conversation_id}/messages?per_page=100",
                        headers=bearer(session)).get_json()
    assert stored["pagination"]["total"] == 8  # trimming never deletes history
    too_long = client.post(f"/v1/agents/{agent['id']}/messages", json={"text": "word " * 400},
                           headers=bearer(session))
    error_of(too_long, 422, "CONTEXT_LENGTH_EXCEEDED")


@pytest.mark.db
def test_streamed_message(agents_app, client, alice):
    agent = make_agent(client, alice)
    response = client.post(f"/v1/agents/{agent['id']}/messages", json={"text": "What does `ls` do?", "stream": True},
                           headers=bearer(alice), buffered=False)
    events = stream_events(response)
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert {e["event"] for e in events[1:-1]} == {"token"}
    done = events[-1]["data"]
    assert done["conversation_id"] == events[0]["data"]["conversation_id"]
    assert done["response"] == "".join(e["data"]["delta"] for e in events[1:-1])
    stored = client.get(f"/v1/agents/conversations/{done['conversation_id']}/messages",
                        headers=bearer(alice)).get_json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant"] and stored[1]["content"] == done["response"]
    assert stored[1]["id"] == done["message_id"]


@pytest.mark.db
def test_conversations_are_private(agents_app, client, alice, bob):
    agent = make_agent(client, alice)
    first = client.post(f"/v1/agents/{agent['id']}/messages", json={"text": "hi", "max_tokens": 4},
                        headers=bearer(alice))
    conversation_id = first.get_json()["data"]["conversation_id"]
    unknown = "cnv_" + "0" * 26
    for method, suffix in (("get", ""), ("get", "/messages"), ("delete", "")):
        other = getattr(client, method)(f"/v1/agents/conversations/{conversation_id}{suffix}", headers=bearer(bob))
        missing = getattr(client, method)(f"/v1/agents/conversations/{unknown}{suffix}", headers=bearer(bob))
        error_of(other, 404, "NOT_FOUND")
        assert without_request_id(other) == without_request_id(missing)
    bobs = make_agent(client, bob)
    error_of(client.post(f"/v1/agents/{bobs['id']}/messages", json={"text": "hi", "conversation_id": conversation_id},
                         headers=bearer(bob)), 404, "NOT_FOUND")
    error_of(client.get(f"/v1/agents/{agent['id']}/conversations", headers=bearer(bob)), 404, "NOT_FOUND")
    assert len(client.get(f"/v1/agents/{agent['id']}/conversations", headers=bearer(alice)).get_json()["data"]) == 1
    assert client.delete(f"/v1/agents/conversations/{conversation_id}", headers=bearer(alice)).status_code == 204
    error_of(client.get(f"/v1/agents/conversations/{conversation_id}", headers=bearer(alice)), 404, "NOT_FOUND")


@pytest.mark.db
def test_chain_streams_step_events_and_feeds_each_output_forward(agents_app, client, alice):
    agent = make_agent(client, alice)
    body = {"steps": [{"agent": agent["id"], "name": "explain"},
                      {"prompt": "Summarise in five words: {previous}", "name": "summary"}],
            "input": "print('hi')"}
    events = stream_events(client.post("/v1/chains/execute", json=body, headers=bearer(alice), buffered=False))
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    steps = [(e["data"]["index"], e["data"]["status"]) for e in events if e["event"] == "step"]
    assert steps == [(0, "started"), (0, "finished"), (1, "started"), (1, "finished")]
    # Tokens of each step come between its started and finished events, and say which step they belong to.
    position = {(e["data"]["index"], e["data"]["status"]): i for i, e in enumerate(events) if e["event"] == "step"}
    for i, event in enumerate(events):
        if event["event"] == "token":
            step = event["data"]["step"]
            assert position[(step, "started")] < i < position[(step, "finished")]
    finished = [e["data"] for e in events if e["event"] == "step" and e["data"]["status"] == "finished"]
    assert events[-1]["data"]["output"] == finished[1]["output"]
    run = client.get(f"/v1/executions/{events[0]['data']['execution_id']}", headers=bearer(alice)).get_json()["data"]
    assert run["kind"] == "chain" and [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
    assert run["usage"]["total_tokens"] == sum(s["usage"]["total_tokens"] for s in run["steps"])


@pytest.mark.db
def test_stored_and_preset_chains_without_streaming(agents_app, client, alice):
    agent = make_agent(client, alice)
    chain = client.post("/v1/chains", json={"name": "two steps", "steps": [
        {"agent": agent["id"]}, {"prompt": "Shorten: {previous}", "max_tokens": 4}]}, headers=bearer(alice))
    response = client.post("/v1/chains/execute", json={"chain": chain.get_json()["data"]["id"], "input": "x = 1",
                                                        "stream": False}, headers=bearer(alice))
    run = response.get_json()["data"]
    assert response.status_code == 200 and run["status"] == "succeeded"
    assert run["output"] == run["steps"][1]["output"] and len(run["output"]) <= 4 * 25  # the step's max_tokens
    # A preset runs its catalog agents (stopped at once here by an unknown model: reading two long
    # catalog prompts on a CPU is slow, and what matters is which steps were set up).
    failed = client.post("/v1/chains/execute", json={"chain": "review-and-commit", "input": "- x = 1\n+ x = 2",
                                                      "stream": False, "model": "no-such-model"},
                         headers=bearer(alice))
    error = error_of(failed, 404, "MODEL_NOT_FOUND")
    preset = client.get(f"/v1/executions/{error['details']['execution_id']}", headers=bearer(alice)).get_json()["data"]
    assert preset["target_id"] == "review-and-commit"
    assert [(s["agent"], s["status"]) for s in preset["steps"]] == [("code-reviewer", "failed"),
                                                                   ("commit-message-writer", "pending")]


@pytest.mark.db
def test_flow_with_model_nodes_and_a_condition(agents_app, client, alice):
    expert = make_agent(client, alice, name="SQL expert", system_prompt="You answer questions about SQL briefly.")
    graph = {"name": "answer or refuse",
             "nodes": [{"id": "in", "type": "input"},
                       {"id": "gate", "type": "condition", "config": {"operator": "contains", "value": "sql"}},
                       {"id": "expert", "type": "agent", "config": {"agent": expert["id"], "prompt": "{input}"}},
                       {"id": "polite", "type": "llm", "config": {"prompt": "Say that only SQL is answered here.",
                                                                  "max_tokens": 6}},
                       {"id": "out", "type": "output"}],
             "edges": [{"source": "in", "target": "gate"}, {"source": "gate", "target": "expert", "label": "true"},
                       {"source": "gate", "target": "polite", "label": "false"},
                       {"source": "expert", "target": "out"}, {"source": "polite", "target": "out"}]}
    flow = client.post("/v1/agents/flows", json=graph, headers=bearer(alice)).get_json()["data"]
    events = stream_events(client.post(f"/v1/agents/flows/{flow['id']}/execute",
                                       json={"input": "How do I write SQL joins?"}, headers=bearer(alice),
                                       buffered=False))
    statuses = {(e["data"]["node_id"], e["data"]["status"]) for e in events if e["event"] == "step"}
    assert ("expert", "finished") in statuses and ("polite", "skipped") in statuses
    tokens = [e["data"] for e in events if e["event"] == "token"]
    assert tokens and {t["node_id"] for t in tokens} == {"expert"}
    assert events[-1]["event"] == "done" and events[-1]["data"]["output"] == "".join(t["delta"] for t in tokens)

    other = client.post(f"/v1/agents/flows/{flow['id']}/execute", json={"input": "Tell me a joke", "stream": False},
                        headers=bearer(alice)).get_json()["data"]
    assert {s["node_id"]: s["status"] for s in other["steps"]} == {
        "in": "succeeded", "gate": "succeeded", "expert": "skipped", "polite": "succeeded", "out": "succeeded"}
    assert len(other["output"]) <= 6 * 25  # the node's max_tokens


def test_conversations_with_a_builtin_agent_stay_private(agents_app, client, alice, bob):
    first = client.post("/v1/agents/commit-message-writer/messages", json={"text": "fix typo", "max_tokens": 2},
                        headers=bearer(alice))
    conversation_id = first.get_json()["data"]["conversation_id"]
    mine = client.get("/v1/agents/commit-message-writer/conversations", headers=bearer(alice)).get_json()["data"]
    assert [(c["id"], c["agent_id"]) for c in mine] == [(conversation_id, "commit-message-writer")]
    assert client.get("/v1/agents/commit-message-writer/conversations", headers=bearer(bob)).get_json()["data"] == []
    error_of(client.get(f"/v1/agents/conversations/{conversation_id}/messages", headers=bearer(bob)), 404,
             "NOT_FOUND")
