"""Envelope helpers: the Blueprint every plugin uses, pagination, shared fields.

`Blueprint.response(200, UserSchema)` dumps `{"data": <user>}` and documents
exactly that; `Blueprint.paginated(UserSchema)` dumps
`{"data": [...], "pagination": {...}}` from a `Page`. Routes whose format an
outside standard fixes pass `envelope=False`.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest.utils import resolve_schema_instance
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser, is_json_request

from . import schema_dump
from .ids import isoformat

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100


class Timestamp(ma.fields.DateTime):
    """UTC ISO 8601 with `Z`."""

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        return isoformat(value)


class PaginationSchema(ma.Schema):
    page = ma.fields.Integer(required=True)
    per_page = ma.fields.Integer(required=True)
    total = ma.fields.Integer(required=True)
    pages = ma.fields.Integer(required=True)
    has_next = ma.fields.Boolean(required=True)
    has_prev = ma.fields.Boolean(required=True)


class PageArgs(ma.Schema):
    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=1_000_000))
    per_page = ma.fields.Integer(load_default=DEFAULT_PER_PAGE, validate=ma.validate.Range(min=1, max=MAX_PER_PAGE))


@dataclass
class Page:
    items: Sequence[Any]
    page: int
    per_page: int
    total: int

    @property
    def pagination(self) -> dict[str, Any]:
        pages = max(math.ceil(self.total / self.per_page), 1) if self.per_page else 1
        return {
            "page": self.page,
            "per_page": self.per_page,
            "total": self.total,
            "pages": pages,
            "has_next": self.page < pages,
            "has_prev": self.page > 1,
        }


def paginate(statement: sa.Select, page: int = 1, per_page: int = DEFAULT_PER_PAGE) -> Page:
    """Run a SELECT for one page, with the total count of the whole result."""
    from .extensions import db

    count = sa.select(sa.func.count()).select_from(statement.order_by(None).subquery())
    total = db.session.scalar(count) or 0
    items = db.session.scalars(statement.limit(per_page).offset((page - 1) * per_page)).all()
    return Page(items=items, page=page, per_page=per_page, total=total)


class _Envelope(ma.Schema):
    """`{"data": <inner>}`. Its `data` field documents the envelope (OpenAPI); dumping goes
    straight to the inner schema, which is what marshmallow's generic path (a pre-dump hook,
    then the envelope's own field loop around one Nested field) ends up doing anyway."""

    _inner: ma.Schema  # set per envelope class by envelope_schema
    _inner_many: bool

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        if many:  # an envelope is one object; a list of envelopes is not something we build
            return super().dump(obj, many=many)
        dump = schema_dump.dumper(self._inner)
        if obj is None:
            return {"data": None}
        if self._inner_many:  # as List(Nested): each item on its own, None kept as None
            return {"data": [None if item is None else dump(item) for item in obj]}
        return {"data": dump(obj)}

    @ma.pre_dump
    def wrap(self, obj: Any, **kwargs: Any) -> dict[str, Any]:
        return {"data": obj}


class _PageEnvelope(ma.Schema):
    """`{"data": [...], "pagination": {...}}`; dumped directly, as _Envelope is."""

    data = ma.fields.List(ma.fields.Raw(), required=True)  # replaced per item schema; keeps `data` first
    pagination = ma.fields.Nested(PaginationSchema, required=True)
    _item: ma.Schema  # set per page class by page_schema
    _pagination = PaginationSchema()

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        if many or not isinstance(obj, Page):
            return super().dump(obj, many=many)
        dump = schema_dump.dumper(self._item)
        return {"data": [None if item is None else dump(item) for item in obj.items],
                "pagination": schema_dump.dumper(self._pagination)(obj.pagination)}

    @ma.pre_dump
    def wrap(self, page: Page, **kwargs: Any) -> dict[str, Any]:
        return {"data": page.items, "pagination": page.pagination}


_cache: dict[tuple[Any, ...], type[ma.Schema]] = {}


def _name(schema: ma.Schema) -> str:
    return type(schema).__name__.removesuffix("Schema")


def envelope_schema(schema: Any) -> type[ma.Schema]:
    inner = resolve_schema_instance(schema)
    key = ("one", type(inner), inner.many, inner.only, tuple(inner.exclude))
    if key not in _cache:
        nested = type(inner)(only=inner.only, exclude=inner.exclude)
        data = ma.fields.Nested(nested, required=True)
        if inner.many:
            data = ma.fields.List(data, required=True)
        suffix = "ListEnvelope" if inner.many else "Envelope"
        _cache[key] = type(f"{_name(inner)}{suffix}", (_Envelope,),
                           {"data": data, "_inner": nested, "_inner_many": bool(inner.many)})
    return _cache[key]


def page_schema(schema: Any) -> type[ma.Schema]:
    inner = resolve_schema_instance(schema)
    key = ("page", type(inner), inner.only, tuple(inner.exclude))
    if key not in _cache:
        nested = type(inner)(only=inner.only, exclude=inner.exclude)
        _cache[key] = type(f"{_name(inner)}Page", (_PageEnvelope,),
                           {"data": ma.fields.List(ma.fields.Nested(nested), required=True), "_item": nested})
    return _cache[key]


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonBodyParser(FlaskParser):
    """webargs' parser, refusing JSON a client could crash a view with: 400, not 500.

    - nesting deep enough to exhaust the decoder's recursion (`[[[[...`);
    - lone UTF-16 surrogates (`"\\ud800"`): valid JSON escapes, but not text, so
      PostgreSQL, UTF-8 files and most libraries fail on them later.
    """

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return webargs_core.missing
        raw = req.get_data(cache=True)
        try:
            data = webargs_core.parse_json(raw)
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", doc="<body>", pos=0) from None
        if _SURROGATE_ESCAPE.search(raw):  # cheap test first: most bodies escape no surrogate at all
            try:
                json.dumps(data, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as error:
                raise json.JSONDecodeError("lone surrogate in a string", doc="<body>", pos=error.start) from None
        return data


class Blueprint(SmorestBlueprint):
    """smorest Blueprint whose responses use the LunaOS envelope."""

    ARGUMENTS_PARSER = JsonBodyParser()

    def response(self, status_code: int, schema: Any = None, *, envelope: bool = True, **kwargs: Any):
        if schema is not None and envelope:
            schema = envelope_schema(schema)
        return super().response(status_code, schema, **kwargs)

    def paginated(self, schema: Any, status_code: int = 200, **kwargs: Any):
        """The view returns a `Page`; the body is `{"data": [...], "pagination": {...}}`."""
        return super().response(status_code, page_schema(schema), **kwargs)
