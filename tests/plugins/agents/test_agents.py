"""Agent CRUD: shapes, validation, pagination and search, scopes, and nobody reaching another user's agents."""
from __future__ import annotations

import pytest

from tests.support.identity import bearer, create_key, error_of, without_request_id

from .conftest import make_agent

pytestmark = pytest.mark.db


def test_create_read_update_delete(client, alice):
    created = make_agent(client, alice, name="Reviewer", description="Reviews Go code",
                         personality={"traits": ["blunt", "precise"]}, model="smollm2", temperature=0.2,
                         max_tokens=300, tools=["git_diff"])
    assert created["id"].startswith("agt_")
    assert created["personality"] == {"traits": ["blunt", "precise"]}
    assert created["model"] == "smollm2" and created["temperature"] == 0.2 and created["tools"] == ["git_diff"]
    assert created["builtin"] is False and created["created_at"].endswith("Z")

    path = f"/v1/agents/{created['id']}"
    assert client.get(path, headers=bearer(alice)).get_json()["data"] == created

    changed = client.patch(path, json={"name": "Go Reviewer", "temperature": None,
                                       "personality": {"traits": ["kind"]}}, headers=bearer(alice))
    assert changed.status_code == 200
    data = changed.get_json()["data"]
    assert data["name"] == "Go Reviewer" and data["temperature"] is None
    assert data["personality"] == {"traits": ["kind"]}
    assert data["description"] == "Reviews Go code"  # untouched fields stay

    assert client.delete(path, headers=bearer(alice)).status_code == 204
    error_of(client.get(path, headers=bearer(alice)), 404, "NOT_FOUND")
    error_of(client.delete(path, headers=bearer(alice)), 404, "NOT_FOUND")


def test_defaults_of_a_minimal_agent(client, alice):
    response = client.post("/v1/agents", json={"name": "Bare", "system_prompt": "Be brief."}, headers=bearer(alice))
    assert response.status_code == 201
    data = response.get_json()["data"]
    assert data["description"] == "" and data["personality"] == {"traits": []} and data["tools"] == []
    assert data["model"] is None and data["temperature"] is None and data["max_tokens"] is None


@pytest.mark.parametrize("body, field", [
    ({"system_prompt": "x"}, "name"),
    ({"name": "x"}, "system_prompt"),
    ({"name": "", "system_prompt": "x"}, "name"),
    ({"name": "x" * 101, "system_prompt": "x"}, "name"),
    ({"name": "x", "system_prompt": "x", "temperature": 2.5}, "temperature"),
    ({"name": "x", "system_prompt": "x", "temperature": "hot"}, "temperature"),
    ({"name": "x", "system_prompt": "x", "personality": {"traits": "kind"}}, "personality.traits"),
    ({"name": "x", "system_prompt": "x", "personality": {"traits": [""]}}, "personality.traits.0"),
    ({"name": "x", "system_prompt": "x", "tools": ["t"] * 33}, "tools"),
    ({"name": "x", "system_prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"name": "x", "system_prompt": "x", "surprise": True}, "surprise"),
])
def test_invalid_agents_are_422_with_the_field(client, alice, body, field):
    error = error_of(client.post("/v1/agents", json=body, headers=bearer(alice)), 422, "VALIDATION_ERROR")
    assert field in error["details"]["fields"], error


def test_list_pages_and_search(client, alice):
    for index in range(7):
        make_agent(client, alice, name=f"Agent {index}", description="SQL tuning" if index % 3 == 0 else "other")
    page = client.get("/v1/agents?per_page=3&page=1", headers=bearer(alice)).get_json()
    assert [a["name"] for a in page["data"]] == ["Agent 6", "Agent 5", "Agent 4"]  # newest first
    assert page["pagination"] == {"page": 1, "per_page": 3, "total": 7, "pages": 3, "has_next": True,
                                  "has_prev": False}
    last = client.get("/v1/agents?per_page=3&page=3", headers=bearer(alice)).get_json()
    assert [a["name"] for a in last["data"]] == ["Agent 0"]
    found = client.get("/v1/agents?search=sql", headers=bearer(alice)).get_json()
    assert {a["name"] for a in found["data"]} == {"Agent 0", "Agent 3", "Agent 6"}
    assert found["pagination"]["total"] == 3
    by_name = client.get("/v1/agents?search=AGENT%205", headers=bearer(alice)).get_json()["data"]
    assert [a["name"] for a in by_name] == ["Agent 5"]
    # LIKE wildcards are literal in a search.
    assert client.get("/v1/agents?search=%25", headers=bearer(alice)).get_json()["data"] == []
    error_of(client.get("/v1/agents?per_page=1000", headers=bearer(alice)), 422, "VALIDATION_ERROR")


def test_another_users_agent_looks_exactly_like_an_unknown_one(client, alice, bob):
    theirs = make_agent(client, bob, name="Bob's secret agent")
    unknown = "agt_" + "0" * 26
    for method, suffix, body in (("get", "", None), ("patch", "", {"name": "mine"}), ("delete", "", None),
                                 ("get", "/conversations", None)):
        call = getattr(client, method)
        kwargs = {"headers": bearer(alice)}
        if body is not None:
            kwargs["json"] = body
        other = call(f"/v1/agents/{theirs['id']}{suffix}", **kwargs)
        missing = call(f"/v1/agents/{unknown}{suffix}", **kwargs)
        error_of(other, 404, "NOT_FOUND")
        assert without_request_id(other) == without_request_id(missing), (method, suffix)
    assert "secret" not in client.get("/v1/agents", headers=bearer(alice)).get_data(as_text=True)
    assert client.get(f"/v1/agents/{theirs['id']}", headers=bearer(bob)).get_json()["data"]["name"] == \
        "Bob's secret agent"


def test_scopes_are_enforced(client, alice):
    reader = create_key(client, alice, scopes=["agents:read"])["key"]
    assert client.get("/v1/agents", headers=bearer(reader)).status_code == 200
    error = error_of(client.post("/v1/agents", json={"name": "x", "system_prompt": "y"}, headers=bearer(reader)),
                     403, "INSUFFICIENT_SCOPE")
    assert error["details"]["required_scope"] == "agents:write"
    unrelated = create_key(client, alice, scopes=["keys:read"])["key"]
    error_of(client.get("/v1/agents", headers=bearer(unrelated)), 403, "INSUFFICIENT_SCOPE")
    error_of(client.get("/v1/agents"), 401, "UNAUTHORIZED")
