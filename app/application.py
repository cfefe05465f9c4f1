"""The Flask and Response classes the app is built on: per-request costs removed, nothing else changed."""
from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask
from flask.sessions import SessionInterface
from flask.wrappers import Response
from werkzeug.datastructures import Headers

from .json_encoding import FastJSONProvider


class NoSession(SessionInterface):
    """The API authenticates with bearer tokens only; no cookie session is read or written
    (Flask would otherwise build a signing serializer on every request)."""

    def open_session(self, app: Flask, request: Any) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


class LunaResponse(Response):
    """werkzeug copies a response's headers before sending them, and the copy checks every
    name and value again (they were checked when set): a dozen security, CORS and plumbing
    headers per response, twice. The copy here takes the checked pairs as they are; the
    cases where werkzeug rewrites headers on the way out go to its own method."""

    def get_wsgi_headers(self, environ: Any) -> Headers:
        status = self.status_code
        headers = self.headers
        if type(headers) is not Headers or status < 200 or status in (204, 304):
            return super().get_wsgi_headers(environ)
        has_length = False
        for name, _ in headers._list:
            lowered = name.lower()
            if lowered == "content-length":
                has_length = True
            elif lowered in ("location", "content-location"):
                return super().get_wsgi_headers(environ)
        if not has_length and self.automatically_set_content_length and self.is_sequence:
            return super().get_wsgi_headers(environ)
        copy = Headers()
        copy._list = list(headers._list)
        return copy


class LunaFlask(Flask):
    """Flask calls `ensure_sync` on every hook and view of every request (about twenty
    times here), and each call inspects the function's code flags. Whether a function
    is a coroutine never changes, so the answer is remembered per function."""

    session_interface = NoSession()
    response_class = LunaResponse
    json_provider_class = FastJSONProvider

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_functions: set[Any] = set()

    def ensure_sync(self, func: Callable) -> Callable:
        key = getattr(func, "__func__", func)  # bound methods are made anew on each access
        try:
            if key in self._sync_functions:
                return func
        except TypeError:  # unhashable callable
            return super().ensure_sync(func)
        if iscoroutinefunction(func):
            return self.async_to_sync(func)
        if len(self._sync_functions) < 10_000:
            self._sync_functions.add(key)
        return func
