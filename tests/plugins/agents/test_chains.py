"""Chains: presets and custom chains, validation, pagination across both, owner checks."""
from __future__ import annotations

import pytest

from plugins.agents.catalog import PRESET_CHAINS
from tests.support.identity import bearer, error_of, without_request_id

from .conftest import make_agent

pytestmark = pytest.mark.db


def create_chain(client, session, **fields):
    body = {"name": "Mine", "steps": [{"agent": "code-reviewer"}, {"prompt": "Summarise: {previous}"}], **fields}
    response = client.post("/v1/chains", json=body, headers=bearer(session))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["data"]


def test_presets_are_listed_first_then_your_chains(client, alice):
    presets = client.get("/v1/chains", headers=bearer(alice)).get_json()
    assert [c["id"] for c in presets["data"]] == [c["slug"] for c in PRESET_CHAINS]
    assert all(c["preset"] for c in presets["data"])
    assert client.get("/v1/chains/review-test-document", headers=bearer(alice)).get_json()["data"]["steps"] == [
        {"agent": "code-reviewer"}, {"agent": "test-writer"}, {"agent": "documentation-writer"}]

    mine = [create_chain(client, alice, name=f"chain {i}") for i in range(3)]
    assert mine[0]["id"].startswith("chn_") and mine[0]["preset"] is False
    count = len(PRESET_CHAINS) + 3
    seen = []
    for page in (1, 2, 3):
        body = client.get(f"/v1/chains?per_page=3&page={page}", headers=bearer(alice)).get_json()
        assert body["pagination"]["total"] == count
        seen += [c["id"] for c in body["data"]]
    assert seen == [c["slug"] for c in PRESET_CHAINS] + [c["id"] for c in reversed(mine)]


def test_steps_must_name_usable_agents_or_prompts(client, alice, bob):
    bobs = make_agent(client, bob)
    for steps, field in (([], "steps"), ([{}], "steps.0"), ([{"agent": "no-such-agent"}], "steps.0.agent"),
                         ([{"agent": bobs["id"]}], "steps.0.agent"),
                         ([{"prompt": "{input}", "temperature": 9}], "steps.0.temperature")):
        error = error_of(client.post("/v1/chains", json={"name": "x", "steps": steps}, headers=bearer(alice)), 422,
                         "VALIDATION_ERROR")
        assert field in error["details"]["fields"], (steps, error)
    own = make_agent(client, alice)
    chain = create_chain(client, alice, steps=[{"agent": own["id"], "name": "mine", "max_tokens": 50}])
    assert chain["steps"] == [{"agent": own["id"], "name": "mine", "max_tokens": 50}]


def test_change_and_delete(client, alice):
    chain = create_chain(client, alice)
    path = f"/v1/chains/{chain['id']}"
    changed = client.patch(path, json={"name": "Renamed", "steps": [{"agent": "sql-helper"}]}, headers=bearer(alice))
    assert changed.get_json()["data"]["steps"] == [{"agent": "sql-helper"}]
    assert client.delete(path, headers=bearer(alice)).status_code == 204
    error_of(client.get(path, headers=bearer(alice)), 404, "NOT_FOUND")
    error_of(client.patch("/v1/chains/find-and-fix", json={"name": "x"}, headers=bearer(alice)), 403,
             "BUILTIN_READ_ONLY")
    error_of(client.delete("/v1/chains/find-and-fix", headers=bearer(alice)), 403, "BUILTIN_READ_ONLY")


def test_another_users_chain_looks_exactly_like_an_unknown_one(client, alice, bob):
    theirs = create_chain(client, bob, name="bob's")
    unknown = "chn_" + "0" * 26
    for method, body in (("get", None), ("patch", {"name": "x"}), ("delete", None)):
        kwargs = {"headers": bearer(alice), **({"json": body} if body else {})}
        other = getattr(client, method)(f"/v1/chains/{theirs['id']}", **kwargs)
        missing = getattr(client, method)(f"/v1/chains/{unknown}", **kwargs)
        error_of(other, 404, "NOT_FOUND")
        assert without_request_id(other) == without_request_id(missing)
    assert theirs["id"] not in client.get("/v1/chains?per_page=100", headers=bearer(alice)).get_data(as_text=True)
    # Running it is refused the same way as running a chain that does not exist.
    other = client.post("/v1/chains/execute", json={"chain": theirs["id"], "input": "x"}, headers=bearer(alice))
    missing = client.post("/v1/chains/execute", json={"chain": unknown, "input": "x"}, headers=bearer(alice))
    error_of(other, 422, "VALIDATION_ERROR")
    assert without_request_id(other) == without_request_id(missing)


def test_execute_needs_a_chain_or_steps(client, alice):
    for body in ({"input": "x"}, {"input": "x", "chain": "find-and-fix", "steps": [{"agent": "bug-finder"}]}):
        error = error_of(client.post("/v1/chains/execute", json=body, headers=bearer(alice)), 422, "VALIDATION_ERROR")
        assert "chain" in error["details"]["fields"]
    error = error_of(client.post("/v1/chains/execute", json={"chain": "find-and-fix"}, headers=bearer(alice)), 422,
                     "VALIDATION_ERROR")
    assert "input" in error["details"]["fields"]
