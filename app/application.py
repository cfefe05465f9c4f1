"""The Flask and Response classes the app is built on: per-request costs removed, nothing else changed."""
from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask
from flask.sessions import SessionInterface
from flask.wrappers import Response
from werkzeug.datastructures import Headers
from werkzeug.routing import MapAdapter

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


def _wsgi_text(value: str) -> str:
    # A WSGI string carries the request's bytes as latin-1 characters; werkzeug reads them as UTF-8.
    return value.encode("latin-1").decode(errors="replace")


class LunaFlask(Flask):
    """Two per-request costs remembered instead of worked out again:

    - Flask calls `ensure_sync` on every hook and view of every request (about twenty
      times here), and each call inspects the function's code flags. Whether a function
      is a coroutine never changes, so the answer is remembered per function.
    - The URL adapter: Flask validates the Host header, then werkzeug does it again,
      lower-cases it and IDNA-encodes it (about 4% of a small request under gunicorn).
      What that gives depends only on the scheme, the Host header and the server's
      address, so it is remembered for the few of those a deployment sees.
    """

    session_interface = NoSession()
    response_class = LunaResponse
    json_provider_class = FastJSONProvider
    MAX_HOSTS = 256  # the Host header is the client's: bounded, and only hosts werkzeug accepted

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_functions: set[Any] = set()
        # (scheme, Host header, SERVER_NAME, SERVER_PORT) -> (request.host, the adapter's server name)
        self._hosts: dict[tuple[Any, ...], tuple[str, str]] = {}

    def create_url_adapter(self, request: Any) -> MapAdapter | None:
        config = self.config
        # These change how Flask binds (an upgrade may be bound with a ws/wss scheme): its own code.
        if (request is None or config["TRUSTED_HOSTS"] is not None or config["SERVER_NAME"] is not None
                or self.url_map.host_matching or self.subdomain_matching or "HTTP_UPGRADE" in request.environ):
            return super().create_url_adapter(request)
        environ = request.environ
        scheme = environ["wsgi.url_scheme"]
        key = (scheme, environ.get("HTTP_HOST"), environ.get("SERVER_NAME"), environ.get("SERVER_PORT"))
        known = self._hosts.get(key)
        if known is None:
            adapter = super().create_url_adapter(request)  # raises BadHost for a host IDNA refuses
            assert adapter is not None
            if len(self._hosts) < self.MAX_HOSTS:
                self._hosts[key] = (request.host, adapter.server_name)  # both as Flask just set them
            return adapter
        request.host, server_name = known
        script_name, path_info, query = (environ.get("SCRIPT_NAME"), environ.get("PATH_INFO"),
                                         environ.get("QUERY_STRING"))
        return MapAdapter(self.url_map, server_name,
                          "/" if script_name is None else _wsgi_text(script_name),
                          self.url_map.default_subdomain or "", scheme,
                          "/" if path_info is None else _wsgi_text(path_info),
                          environ["REQUEST_METHOD"], None if query is None else _wsgi_text(query))

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
