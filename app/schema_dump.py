"""marshmallow's `Schema.dump`, compiled per schema into one straight-line function.

marshmallow dumps field by field through three method calls each (`serialize`,
`get_value`, the accessor) and `_serialize`; a response schema of ten fields
costs ~25 µs that way, about a tenth of a small authenticated request here.
`dumper(schema)` returns a function that produces exactly what `schema.dump`
does, with the lookups written out and the common values (a `str` for a
String, an `int` for an Integer, ...) passed through without a call.

It compiles only what it can reproduce exactly and hands the rest back to
marshmallow: schemas with dump hooks, their own `dump`, `_serialize` or
`get_attribute`, dotted attributes or many=True; any field class that
overrides `serialize` or `get_value` is called through `serialize` as
marshmallow would; objects that are neither a plain `dict` nor free of
`__getitem__` go to `schema.dump`. tests/core/test_schema_dump.py holds it to
marshmallow's output field type by field type.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import marshmallow as ma
from marshmallow import fields
from marshmallow.decorators import POST_DUMP, PRE_DUMP

Dumper = Callable[[Any], Any]
_MISSING = ma.missing
_ATTRIBUTE = "_lunaos_dumper"

# Field classes whose `_serialize` returns the value itself for values of this exact type.
_PASS_THROUGH: dict[type, type] = {fields.String: str, fields.Integer: int, fields.Float: float, fields.Boolean: bool}


def dumper(schema: ma.Schema) -> Dumper:
    """A function equal to `schema.dump` (for one object), compiled on first use."""
    found = schema.__dict__.get(_ATTRIBUTE)
    if found is None:
        found = _compile(schema) or schema.dump
        schema.__dict__[_ATTRIBUTE] = found
    return found


def _compilable(schema: ma.Schema) -> bool:
    cls = type(schema)
    return (not schema.many and not schema._hooks[PRE_DUMP] and not schema._hooks[POST_DUMP]
            and cls.dump is ma.Schema.dump and cls._serialize is ma.Schema._serialize
            and cls.get_attribute is ma.Schema.get_attribute and schema.dict_class is dict)


def _standard(field: fields.Field) -> bool:
    cls = type(field)
    return cls.serialize is fields.Field.serialize and cls.get_value is fields.Field.get_value


def _nested_dumper(field: fields.Field) -> Dumper | None:
    """For a plain Nested of one object: its schema's compiled dumper, else None."""
    if type(field) is not fields.Nested or field.many:
        return None
    schema = field.schema
    if not _compilable(schema):
        return None
    return dumper(schema)


def _compile(schema: ma.Schema) -> Dumper | None:
    if not _compilable(schema):
        return None
    names: dict[str, Any] = {"MISSING": _MISSING, "_slow": schema.dump, "_dict": dict}
    # Two variants: attributes of an object, or keys of a plain dict (falling back to its
    # attributes, as marshmallow's accessor does); anything else with __getitem__ goes to marshmallow.
    by_attribute = _body(schema, names, lambda key: f"getattr(obj, {key!r}, MISSING)")
    by_key = _body(schema, names, lambda key: f"(obj[{key!r}] if {key!r} in obj else getattr(obj, {key!r}, MISSING))")
    if by_attribute is None or by_key is None:
        return None
    source = ""
    for name, body in (("dump_object", by_attribute), ("dump_dict", by_key)):
        source += f"def {name}(obj):\n    out = {{}}\n" + "".join(f"    {line}\n" for line in body) + "    return out\n"
    source += ("def dump(obj):\n"
               "    if type(obj) is _dict:\n        return dump_dict(obj)\n"
               "    if hasattr(obj, '__getitem__'):\n        return _slow(obj)\n"
               "    return dump_object(obj)\n")
    exec(compile(source, f"<dump {type(schema).__name__}>", "exec"), names)  # noqa: S102 - source built here
    return names["dump"]


def _body(schema: ma.Schema, names: dict[str, Any], get: Callable[[str], str]) -> list[str] | None:
    """The statements that fill `out` from `obj`, one group per dumped field, in marshmallow's order."""
    from .http import Timestamp  # defined with the envelope, which imports this module

    lines: list[str] = []
    for index, (attr_name, field) in enumerate(schema.dump_fields.items()):
        key = field.data_key if field.data_key is not None else attr_name
        check_key = attr_name if field.attribute is None else field.attribute
        if not isinstance(check_key, str) or "." in check_key:
            return None
        out = f"out[{key!r}]"
        if not _standard(field):  # its own serialize/get_value: called exactly as marshmallow does
            names[f"F{index}"] = field
            names["_accessor"] = schema.get_attribute
            lines += [f"r = F{index}.serialize({attr_name!r}, obj, accessor=_accessor)",
                      f"if r is not MISSING: {out} = r"]
            continue
        names[f"S{index}"] = field._serialize
        if not field._CHECK_ATTRIBUTE:  # Method, Function, Constant: no value is looked up
            lines += [f"r = S{index}(None, {attr_name!r}, obj)", f"if r is not MISSING: {out} = r"]
            continue
        lines.append(f"v = {get(check_key)}")
        default = field.dump_default
        if default is not _MISSING:
            names[f"D{index}"] = default
            lines.append(f"if v is MISSING: v = D{index}()" if callable(default) else f"if v is MISSING: v = D{index}")
        guard = "if v is not MISSING: "
        cls = type(field)
        exact = _PASS_THROUGH.get(cls)
        nested = _nested_dumper(field)
        if exact is not None and not getattr(field, "as_string", False):
            names[f"T{index}"] = exact
            lines.append(f"{guard}{out} = v if type(v) is T{index} else S{index}(v, {attr_name!r}, obj)")
        elif cls is fields.Raw:
            lines.append(f"{guard}{out} = v")
        elif cls is Timestamp:
            from .ids import isoformat

            names["isoformat"] = isoformat
            lines.append(f"{guard}{out} = isoformat(v)")
        elif nested is not None:
            names[f"N{index}"] = nested
            lines.append(f"{guard}{out} = None if v is None else N{index}(v)")
        else:  # the field's own conversion; it may answer MISSING, which leaves the key out
            lines += ["if v is not MISSING:", f"    r = S{index}(v, {attr_name!r}, obj)",
                      f"    if r is not MISSING: {out} = r"]
    return lines
