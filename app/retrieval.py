"""Retrieval as a core extension point: search a user's indexed content without knowing who indexes it.

A retrieval plugin (rag) registers one function in its `init_app`; consumers
(agent flows' `rag_search` nodes, for instance) call `search()` and never
import that plugin. With no retriever registered, `search()` raises a clear
422 instead of pretending there is nothing to find.

    retrieval.register_retriever(app, fn)     # fn(owner_id, query, top_k, **filters) -> list[dict]
    retrieval.search("usr_...", "how are keys hashed?", top_k=3, language="python")

Each result is a dict with at least `content` and `score`, and `metadata`
(source, path, document_id, ...) when the retriever knows it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

from .errors import ApiError

Retriever = Callable[..., list[dict[str, Any]]]
_KEY = "lunaos.retriever"
MAX_TOP_K = 100


class RetrievalUnavailable(ApiError):
    status = 422
    code = "RETRIEVAL_UNAVAILABLE"
    message = "Retrieval needs a retrieval plugin (rag_search nodes need the rag plugin); none is loaded."


def register_retriever(app: Flask, fn: Retriever) -> None:
    """Make `fn(owner_id, query, top_k, **filters)` the app's retriever. One per app: a second
    registration of another function is a set-up mistake and fails loudly."""
    if not callable(fn):
        raise TypeError("register_retriever() needs a callable")
    current = app.extensions.get(_KEY)
    if current is not None and current is not fn:
        raise RuntimeError(f"a retriever is already registered ({_name(current)}); refusing {_name(fn)}")
    app.extensions[_KEY] = fn


def unregister_retriever(app: Flask) -> None:
    app.extensions.pop(_KEY, None)


def available(app: Flask | None = None) -> bool:
    return (app or current_app).extensions.get(_KEY) is not None


def search(owner_id: str, query: str, top_k: int = 5, **filters: Any) -> list[dict[str, Any]]:
    """The owner's best `top_k` matches for `query`, best first."""
    fn = current_app.extensions.get(_KEY)
    if fn is None:
        raise RetrievalUnavailable()
    if not isinstance(query, str) or not query.strip():
        raise ApiError("A retrieval query must be non-empty text.", status=422, code="VALIDATION_ERROR",
                       details={"fields": {"query": ["Must be non-empty text."]}})
    top_k = max(1, min(int(top_k), MAX_TOP_K))
    results = fn(owner_id, query, top_k, **filters)
    return [dict(result) for result in list(results or [])[:top_k]]


def _name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
