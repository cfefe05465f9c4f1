"""JSON out: orjson for response bodies and log lines, the standard library where orjson differs.

The standard encoder builds its C encoder anew on every `json.dumps` call: about 7 µs of a
small response and 5 µs of each access-log line here, against 0.5 µs for orjson. Where
orjson would write something else, the standard library still writes it:

- datetimes and dataclasses go through the caller's `default` (Flask writes an HTTP date
  and `dataclasses.asdict`; the log writes `str()`), not orjson's own forms;
- integers beyond 64 bits, strings with lone surrogates and anything else orjson refuses
  fall back to `json.dumps` (ASCII, so a lone surrogate is escaped as before), which
  raises the usual TypeError if it cannot either.

What does change: `dumps()` and log lines are compact, like Flask's responses already were
(no spaces after `,` and `:`); responses are UTF-8 (as RFC 8259 expects; only what falls
back is ASCII-escaped) while log lines stay ASCII, since a log stream's encoding is not
ours to know; NaN and infinities become `null` instead of the invalid `NaN`; a float such
as 1e-05 is written `0.00001` (the same number).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider
from flask.wrappers import Response

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps_bytes(obj: Any, default: Callable[[Any], Any] | None = None, sort_keys: bool = False) -> bytes | None:
    """orjson's compact encoding of `obj`, or None where the standard library must decide."""
    try:
        return orjson.dumps(obj, default=default, option=_OPTIONS | (orjson.OPT_SORT_KEYS if sort_keys else 0))
    except (orjson.JSONEncodeError, TypeError):
        return None


class FastJSONProvider(DefaultJSONProvider):
    """Flask's provider with orjson writing what it writes identically (compact, UTF-8)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if not kwargs:
            encoded = dumps_bytes(obj, self.default, self.sort_keys)
            if encoded is not None:
                return encoded.decode()
            kwargs["separators"] = (",", ":")  # compact, like orjson's output
        return self._standard(obj, **kwargs)

    def _standard(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("ensure_ascii", True)  # a lone surrogate is escaped, never sent raw
        return super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)  # indented: the standard library's job
        obj = self._prepare_response_obj(args, kwargs)
        encoded = dumps_bytes(obj, self.default, self.sort_keys)
        if encoded is None:
            encoded = self._standard(obj, separators=(",", ":")).encode()
        return self._app.response_class(encoded + b"\n", mimetype=self.mimetype)


_LINE_FALLBACK = json.JSONEncoder(separators=(",", ":"), default=str)  # ASCII; keeps no state between calls


def ascii_json(value: Any) -> str:
    """Compact ASCII JSON, `str()` for what JSON has no type for: log lines and SSE `data:`
    (what `json.dumps(value, separators=(",", ":"), default=str)` gives)."""
    encoded = dumps_bytes(value, str)
    if encoded is not None and encoded.isascii():
        return encoded.decode("ascii")
    return _LINE_FALLBACK.encode(value)


def dumps_compact(obj: Any) -> bytes:
    """Compact UTF-8 JSON for a request body to another server (what `json.dumps(obj,
    separators=(",", ":"), ensure_ascii=False).encode()` gives, written by orjson when it can;
    what it refuses is written ASCII-escaped, so a lone surrogate cannot break the encoding)."""
    encoded = dumps_bytes(obj)
    if encoded is not None:
        return encoded
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def loads(data: bytes | str) -> Any:
    """Parse a provider's reply: orjson, and the standard library for what orjson refuses (NaN).

    Unlike `json.loads`, an integer beyond 64 bits comes back as a float (orjson's rule);
    replies from model servers (counts, indexes, timestamps) hold none, and request bodies
    from API users are parsed by Flask's standard parser, not here."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
