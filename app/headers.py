"""Appending response headers that were validated once, when they were first worked out.

werkzeug's `Headers.add` checks every name and value for newlines on each call;
the security, CORS and plumbing headers of a response are the same few constant
pairs request after request, so they are checked once (by `Headers` itself, when
they are first computed) and then appended as they are.
"""
from __future__ import annotations

from collections.abc import Iterable

from werkzeug.datastructures import Headers


def append_trusted(headers: Headers, pairs: Iterable[tuple[str, str]]) -> None:
    """Append (name, value) pairs that came out of a `Headers` (so already valid)."""
    items = getattr(headers, "_list", None)
    if type(headers) is Headers and isinstance(items, list):
        items.extend(pairs)
    else:  # some other container: let it check
        for name, value in pairs:
            headers.add(name, value)


def has_header(headers: Headers, lowered: str) -> bool:
    """`lowered in headers` without werkzeug's lookup, which raises and catches a KeyError on a miss."""
    items = getattr(headers, "_list", None)
    if type(headers) is not Headers or not isinstance(items, list):
        return lowered in headers
    size = len(lowered)
    for name, _ in items:
        if len(name) == size and name.lower() == lowered:
            return True
    return False
