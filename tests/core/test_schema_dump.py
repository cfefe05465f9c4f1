"""The compiled dumper gives exactly what marshmallow's `Schema.dump` gives: same keys, same
order, same values, same errors, for every field type and every shape of input."""
from __future__ import annotations

import enum
import types
from datetime import UTC, datetime, timedelta, timezone

import marshmallow as ma
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import http, schema_dump
from app.http import Timestamp


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Child(ma.Schema):
    id = ma.fields.String()
    count = ma.fields.Integer()


class Upper(ma.fields.String):
    """A field class with its own serialize: must be called as marshmallow calls it."""

    def serialize(self, attr, obj, accessor=None, **kwargs):
        value = super().serialize(attr, obj, accessor=accessor, **kwargs)
        return value.upper() if isinstance(value, str) else value


class Everything(ma.Schema):
    text = ma.fields.String()
    number = ma.fields.Integer()
    number_text = ma.fields.Integer(as_string=True)
    ratio = ma.fields.Float()
    flag = ma.fields.Boolean()
    raw = ma.fields.Raw()
    stamp = Timestamp()
    plain_datetime = ma.fields.DateTime()
    mail = ma.fields.Email()
    mapping = ma.fields.Dict()
    words = ma.fields.List(ma.fields.String())
    child = ma.fields.Nested(Child)
    children = ma.fields.List(ma.fields.Nested(Child))
    many_children = ma.fields.Nested(Child, many=True)
    child_id = ma.fields.Pluck(Child, "id")
    colour = ma.fields.Enum(Colour)
    renamed = ma.fields.String(data_key="renamedKey")
    aliased = ma.fields.String(attribute="source_name")
    defaulted = ma.fields.String(dump_default="fallback")
    made_default = ma.fields.Integer(dump_default=lambda: 41)
    secret = ma.fields.String(load_only=True)
    method = ma.fields.Method("describe")
    function = ma.fields.Function(lambda obj: "fn")
    constant = ma.fields.Constant("always")
    shouted = Upper()

    def describe(self, obj):
        return "described"


NAMES = [name for name in Everything().dump_fields] + ["source_name", "secret"]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
    st.text(max_size=8), st.sampled_from(["false", "0", "off", "TRUE", "1"]),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])), st.datetimes(),
    st.lists(st.text(max_size=3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(list(Colour)),
    st.builds(lambda i, c: {"id": i, "count": c}, st.text(max_size=3), st.integers(0, 9)),
)


def outcome(call, obj):
    try:
        result = call(obj)
    except Exception as error:  # noqa: BLE001 - the comparison is of what each raises
        return ("raised", type(error))
    return ("ok", result, list(result) if isinstance(result, dict) else None)


def same(schema, obj):
    compiled = schema_dump.dumper(schema)
    assert compiled is not schema.dump, "this schema should have been compiled"
    assert outcome(compiled, obj) == outcome(schema.dump, obj)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(NAMES), VALUES))
def test_objects_and_dicts_dump_as_marshmallow_dumps_them(values):
    schema = Everything()
    same(schema, values)  # a plain dict: keys, with marshmallow's fall-back to attributes
    same(schema, types.SimpleNamespace(**values))  # an object: attributes


def test_values_that_marshmallow_converts_are_converted():
    schema = Everything()
    subclass_text = type("Name", (str,), {})("abc")
    obj = types.SimpleNamespace(text=subclass_text, number=True, ratio=3, flag="false", stamp=datetime(2026, 1, 1),
                                number_text=7, words=("a", "b"), source_name="from-attribute", shouted="loud")
    dumped = schema_dump.dumper(schema)(obj)
    assert dumped == schema.dump(obj)
    assert dumped["number"] == 1 and type(dumped["number"]) is int
    assert dumped["ratio"] == 3.0 and type(dumped["ratio"]) is float and dumped["number_text"] == "7"
    assert dumped["aliased"] == "from-attribute" and dumped["shouted"] == "LOUD"
    assert dumped["stamp"] == "2026-01-01T00:00:00.000Z"
    assert "secret" not in dumped and dumped["defaulted"] == "fallback" and dumped["made_default"] == 41


def test_a_dict_missing_a_key_falls_back_to_its_attributes_as_marshmallow_does():
    class Odd(ma.Schema):
        items = ma.fields.Raw()  # dict.items exists as an attribute
        name = ma.fields.String()

    same(Odd(), {"name": "x"})


def test_other_mappings_go_to_marshmallow_unchanged():
    from collections import defaultdict

    schema = Child()
    value = defaultdict(lambda: 7, {"id": "a"})  # its __missing__ must be honoured
    assert schema_dump.dumper(schema)(value) == schema.dump(value) == {"id": "a", "count": 7}


@pytest.mark.parametrize("schema", [
    type("Hooked", (ma.Schema,), {"a": ma.fields.String(), "hook": ma.post_dump(lambda self, d, **k: d)})(),
    type("Dotted", (ma.Schema,), {"a": ma.fields.String(attribute="x.y")})(),
    Child(many=True),
], ids=["post_dump hook", "dotted attribute", "many"])
def test_what_it_cannot_reproduce_is_left_to_marshmallow(schema):
    assert schema_dump.dumper(schema) == schema.dump


class _Nothing:
    """Every attribute missing."""


class _AllNone:
    def __getattr__(self, name):
        return None


def _response_schemas():
    seen = {}
    for cls in http._cache.values():
        inner = getattr(cls, "_inner", None) or getattr(cls, "_item", None)
        if inner is not None:
            seen.setdefault(type(inner), inner)
    return list(seen.values())


def test_every_response_schema_of_the_app_dumps_as_marshmallow_dumps_it(app):
    schemas = _response_schemas()
    assert len(schemas) > 20  # the plugins' response schemas are all registered by now
    for schema in schemas:
        compiled = schema_dump.dumper(schema)
        for obj in (_Nothing(), _AllNone(), {}):
            assert outcome(compiled, obj) == outcome(schema.dump, obj), type(schema).__name__


def test_envelopes_and_pages_use_it_and_keep_their_shape(app):
    page = http.Page(items=[{"id": "a", "count": 1}, None], page=1, per_page=2, total=3)
    assert http.page_schema(Child)().dump(page) == {
        "data": [{"id": "a", "count": 1}, None],
        "pagination": {"page": 1, "per_page": 2, "total": 3, "pages": 2, "has_next": True, "has_prev": False}}
    assert http.envelope_schema(Child)().dump(types.SimpleNamespace(id="b", count=2)) == {"data": {"id": "b",
                                                                                                 "count": 2}}
    assert http.envelope_schema(Child(many=True))().dump([{"id": "c"}, None]) == {"data": [{"id": "c"}, None]}
