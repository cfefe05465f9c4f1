"""Response bodies and log lines written by orjson say what the standard library's would."""
from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from hypothesis import given, settings
from hypothesis import strategies as st

from app.json_encoding import FastJSONProvider, ascii_json

# What JSON can hold, with the odd cases: non-ASCII and astral text, big and negative
# integers, keys that are not strings.
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text())
keys = st.one_of(st.text(), st.integers(min_value=-1000, max_value=1000), st.booleans())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=20)


@pytest.fixture(scope="module")
def providers() -> tuple[FastJSONProvider, DefaultJSONProvider]:
    app = Flask(__name__)
    fast, standard = FastJSONProvider(app), DefaultJSONProvider(app)
    return fast, standard


@settings(max_examples=300, deadline=None)
@given(values)
def test_bodies_decode_to_what_the_standard_encoder_gives(providers, value) -> None:
    fast, standard = providers
    for sort_keys in (False, True):
        fast.sort_keys = standard.sort_keys = sort_keys
        try:
            expected = standard.dumps(value)
        except TypeError:  # sorting keys of mixed types: the standard library refuses
            continue
        assert json.loads(fast.dumps(value)) == json.loads(expected)
        if sort_keys is False:
            assert list(json.loads(fast.dumps(value)) if isinstance(value, dict) else []) == \
                list(json.loads(expected) if isinstance(value, dict) else [])  # key order kept


@dataclasses.dataclass
class Point:
    x: int
    when: datetime


def test_flask_conversions_are_kept(providers) -> None:
    fast, standard = providers
    fast.sort_keys = standard.sort_keys = False
    moment = datetime(2026, 12, 4, 18, 0, 5, tzinfo=UTC)
    value = {"at": moment, "day": date(2026, 12, 4), "id": uuid.UUID(int=7), "amount": Decimal("1.10"),
             "point": Point(1, moment)}
    decoded = json.loads(fast.dumps(value))
    assert decoded == json.loads(standard.dumps(value))
    assert decoded["at"] == "Fri, 04 Dec 2026 18:00:05 GMT"  # Flask's HTTP date, not orjson's ISO form
    assert decoded["amount"] == "1.10"


def test_what_orjson_refuses_goes_to_the_standard_library(providers) -> None:
    fast, _ = providers
    huge = 2**80
    assert json.loads(fast.dumps({"n": huge})) == {"n": huge}
    assert fast.dumps("\udc80") == '"\\udc80"'  # a lone surrogate: escaped, not an error
    with pytest.raises(TypeError):
        fast.dumps({"x": object()})


def test_responses_are_compact_utf8_with_a_newline() -> None:
    app = Flask(__name__)
    app.json = FastJSONProvider(app)
    app.json.sort_keys = False
    with app.app_context():
        response = app.json.response({"name": "Zoë", "n": float("nan"), "b": 1})
    assert response.mimetype == "application/json"
    assert response.get_data() == '{"name":"Zoë","n":null,"b":1}\n'.encode()


def test_debug_responses_are_indented() -> None:
    app = Flask(__name__)
    app.json = FastJSONProvider(app)
    app.debug = True
    with app.app_context():
        assert app.json.response({"a": 1}).get_data() == b'{\n  "a": 1\n}\n'


def test_log_lines_are_ascii_json() -> None:
    line = ascii_json({"message": "Zoë 🚀", "status": 200, "when": datetime(2026, 1, 2, tzinfo=UTC), "n": 2**80})
    assert line.isascii()
    assert json.loads(line) == {"message": "Zoë 🚀", "status": 200, "when": "2026-01-02 00:00:00+00:00", "n": 2**80}
    assert ascii_json({"path": "/v1/auth/me", "status": 200}) == '{"path":"/v1/auth/me","status":200}'


def test_upstream_bodies_and_replies() -> None:
    from app.json_encoding import dumps_compact, loads

    body = {"model": "m", "messages": [{"role": "user", "content": "Zoë"}], "temperature": 0.5}
    assert dumps_compact(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(dumps_compact({"n": 2**80, "s": "\udc80"})) == {"n": 2**80, "s": "\udc80"}  # ASCII fallback
    with pytest.raises(TypeError):
        dumps_compact({"when": datetime(2026, 1, 1)})  # a request body must not be guessed at
    assert loads(b'{"a":[1,2.5,"x"]}') == {"a": [1, 2.5, "x"]}
    assert loads('{"n": NaN}')["n"] != loads('{"n": NaN}')["n"]  # NaN: the standard library's reading
    with pytest.raises(ValueError):
        loads(b"{not json")
