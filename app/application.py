"""The Flask class the app is built on: two per-request costs removed, nothing else changed."""
from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask
from flask.sessions import SessionInterface


class NoSession(SessionInterface):
    """The API authenticates with bearer tokens only; no cookie session is read or written
    (Flask would otherwise build a signing serializer on every request)."""

    def open_session(self, app: Flask, request: Any) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


class LunaFlask(Flask):
    """Flask calls `ensure_sync` on every hook and view of every request (about twenty
    times here), and each call inspects the function's code flags. Whether a function
    is a coroutine never changes, so the answer is remembered per function."""

    session_interface = NoSession()

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
