"""Pieces with no HTTP around them: conditions, templates, history fitting, the retrieval registry."""
from __future__ import annotations

import pytest

from app import llm, retrieval
from app.errors import ApiError
from plugins.agents import conditions, prompting

from .conftest import without_retriever


@pytest.mark.parametrize("config, text, expected", [
    ({"operator": "contains", "value": "ERROR"}, "an error occurred", True),
    ({"operator": "contains", "value": "ERROR", "case_sensitive": True}, "an error occurred", False),
    ({"operator": "not_contains", "value": "ok"}, "all good", True),
    ({"operator": "equals", "value": "yes"}, "  Yes \n", True),
    ({"operator": "not_equals", "value": "yes"}, "no", True),
    ({"operator": "starts_with", "value": "LGTM"}, "lgtm, ship it", True),
    ({"operator": "ends_with", "value": "?"}, "really?", True),
    ({"operator": "matches", "value": r"^\d+ tests? passed"}, "12 tests passed in 3s", True),
    ({"operator": "regex", "value": r"fail(ed|ure)"}, "no failures", True),
    ({"operator": "not_matches", "value": r"fail"}, "all passed", True),
    ({"operator": "length_gt", "value": 5}, "123456", True),
    ({"operator": "length_lte", "value": 5}, "123456", False),
    ({"operator": "length_eq", "value": 0}, "", True),
    ({"operator": "is_empty"}, "  \n", True),
    ({"operator": "not_empty"}, "x", True),
])
def test_conditions_evaluate(config, text, expected):
    assert conditions.problems(config) == []
    assert conditions.evaluate(config, text) is expected


@pytest.mark.parametrize("config, fragment", [
    ({}, "config.operator must be one of"),
    ({"operator": "eval", "value": "__import__('os')"}, "config.operator must be one of"),
    ({"operator": "contains"}, "non-empty text"),
    ({"operator": "length_gt", "value": "5"}, "whole number"),
    ({"operator": "length_gt", "value": True}, "whole number"),
    ({"operator": "matches", "value": "(unclosed"}, "not a valid regular expression"),
    ({"operator": "matches", "value": "a" * 501}, "at most 500"),
    ({"operator": "contains", "value": "x", "case_sensitive": "yes"}, "true or false"),
])
def test_condition_mistakes_are_explained(config, fragment):
    problems = conditions.problems(config)
    assert problems and fragment in problems[0]


def test_a_catastrophic_regex_is_stopped_not_left_running():
    config = {"operator": "matches", "value": r"(x+x+)+y"}
    assert conditions.problems(config) == []
    with pytest.raises(ApiError) as caught:
        conditions.evaluate(config, "x" * 5000)
    assert caught.value.code == "CONDITION_TIMEOUT"


def test_templates_fill_only_known_placeholders():
    text = prompting.render("Q: {input}\nA: {previous}\nTeam: {context.team}\nPlan: {nodes.plan}\n"
                            "code: {x: 1} {missing} {input.__class__}",
                            input="why?", previous="because", context={"team": "core"}, nodes={"plan": "ship"})
    assert text == ("Q: why?\nA: because\nTeam: core\nPlan: ship\n"
                    "code: {x: 1} {missing} {input.__class__}")
    assert prompting.render("{input}", input={"message": "hi"}) == '{\n  "message": "hi"\n}'
    assert prompting.render("{context.nope}|{nodes.nope}") == "|"


def test_history_fitting_keeps_the_newest_turns(make_app):
    app = make_app(LLM_OFFLINE=False, LLM_PROVIDERS=[{"name": "local", "type": "openai",
                                                       "base_url": "http://127.0.0.1:9/v1", "models": ["m"],
                                                       "context_window": 300}])
    with app.app_context():
        history = []
        for turn in range(10):
            history += [("user", f"question {turn} " + "word " * 20, 0), ("assistant", f"answer {turn}", 0)]
        fitted = prompting.fit("Be brief.", history, "the new question", model="m", max_tokens=50)
        roles = [m.role for m in fitted.messages]
        assert roles[0] == "system" and roles[-1] == "user" and fitted.messages[-1].content == "the new question"
        assert roles[1] == "user"  # never opens on an answer
        assert fitted.dropped > 0 and fitted.included + fitted.dropped == 20
        assert "answer 9" in fitted.messages[-2].content  # the newest turn is kept
        assert fitted.prompt_tokens + fitted.max_tokens <= llm.context_window("m")
        # When the answer's budget must give way, it shrinks; when nothing fits, it is an error.
        tight = prompting.fit(None, [], "word " * 200, model="m", max_tokens=1000)
        assert tight.max_tokens < 1000 and tight.included == 0
        with pytest.raises(prompting.ContextTooLong):
            prompting.fit(None, [], "word " * 400, model="m", max_tokens=100)


def test_retrieval_registry(make_app):
    app = without_retriever(make_app())
    with app.app_context():
        assert not retrieval.available()
        with pytest.raises(ApiError) as caught:
            retrieval.search("usr_1", "query")
        assert caught.value.status == 422 and "rag plugin" in caught.value.message

        calls = []

        def fn(owner_id, query, top_k, **filters):
            calls.append((owner_id, query, top_k, filters))
            return [{"content": str(i), "score": 1 / (i + 1)} for i in range(10)]

        retrieval.register_retriever(app, fn)
        retrieval.register_retriever(app, fn)  # the same function again is harmless
        with pytest.raises(RuntimeError, match="already registered"):
            retrieval.register_retriever(app, lambda *a, **k: [])
        assert [r["content"] for r in retrieval.search("usr_1", "q", top_k=3, language="go")] == ["0", "1", "2"]
        assert calls == [("usr_1", "q", 3, {"language": "go"})]
        with pytest.raises(ApiError):
            retrieval.search("usr_1", "   ")
        retrieval.unregister_retriever(app)
        assert not retrieval.available()
