"""Three per-response costs of gunicorn's HTTP/1 writer, removed without changing what it sends.

- `Response.process_headers` runs two regular expressions over every header
  name and value of every response. A LunaOS response carries about twenty
  headers and most are the same pairs each time (security, CORS): each distinct
  pair is checked once by gunicorn's own method and then appended as checked;
  the few whose values change on every response (request id, timing, counters)
  are checked by a cheaper test that accepts exactly what gunicorn's would.
  Pairs whose handling has side effects (Content-Length, hop-by-hop headers)
  always go through gunicorn's method.
- `util.http_date()` formats the Date header through `email.utils` for every
  response; its text changes once a second, so it is formatted once a second.
- `Response.write` sends the header block and the body in two `sendall` calls
  (two system calls each under gevent, and two TCP segments). When the first
  write is the whole body of a response with a Content-Length, the header bytes
  gunicorn builds are sent together with it; every other write is gunicorn's.

On twenty headers this is about 30 us less per response on the development
machine (see README, benchmarks). `install()` is called from gunicorn.conf.py;
it leaves gunicorn untouched if its internals are not the ones this was
written against.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

MAX_REMEMBERED = 2048  # distinct checked pairs; request ids and timings churn through it

_installed = False
_lock = threading.Lock()


class CheckedHeaders:
    """`process_headers` with each plain (name, value) pair checked by gunicorn once.

    Some values change on every response (request id, timing, rate-limit counters). A
    name gunicorn has accepted as plain is then trusted with any printable-ASCII value:
    gunicorn's value pattern accepts every such character, and its only change to the
    value is stripping spaces and tabs. Such churning pairs are not remembered, so they
    do not crowd out the constant ones.
    """

    CHURN = 8  # distinct values of one name remembered as pairs; past that, checked by name

    def __init__(self, original: Callable[[Any, Iterable[tuple[str, str]]], None],
                 is_hoppish: Callable[[str], bool]) -> None:
        self.original = original
        self.is_hoppish = is_hoppish
        self.checked: dict[tuple[str, str], tuple[str, str]] = {}
        self.plain_names: dict[str, int] = {}  # name -> pairs of it remembered so far

    def __call__(self, response: Any, headers: Iterable[tuple[str, str]]) -> None:
        checked = self.checked
        plain_names = self.plain_names
        out = response.headers
        for pair in headers:
            try:
                known = checked.get(pair)
            except TypeError:  # not a hashable pair: gunicorn's method says what is wrong
                known = None
            if known is not None:
                out.append(known)
                continue
            if type(pair) is tuple and len(pair) == 2 and pair[0] in plain_names:
                name, value = pair
                if type(value) is str and value.isascii() and value.isprintable():
                    result = (name, value.strip(" \t"))
                    out.append(result)
                    seen = plain_names[name]
                    if seen < self.CHURN:
                        plain_names[name] = seen + 1
                        self._remember(pair, result)
                    continue
            before = len(out)
            self.original(response, [pair])  # validates; raises exactly as gunicorn does
            if len(out) == before + 1 and self._plain(pair):
                seen = plain_names.get(pair[0], 0)
                plain_names[pair[0]] = min(seen + 1, self.CHURN)
                if seen < self.CHURN:
                    self._remember(pair, out[-1])

    def _remember(self, pair: tuple[str, str], result: tuple[str, str]) -> None:
        if len(self.checked) >= MAX_REMEMBERED:
            self.checked.clear()
        if len(self.plain_names) >= MAX_REMEMBERED:
            self.plain_names.clear()
        self.checked[pair] = result

    def _plain(self, pair: tuple[str, str]) -> bool:
        """A pair gunicorn only appends (after stripping the value), with no other effect."""
        if type(pair) is not tuple:
            return False
        name = pair[0]
        return type(name) is str and type(pair[1]) is str and name.lower() != "content-length" \
            and not self.is_hoppish(name)


class SecondDate:
    """`http_date()` for the current time, formatted at most once per second."""

    def __init__(self, original: Callable[..., str]) -> None:
        self.original = original
        self.current: tuple[int, str] = (-1, "")

    def __call__(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return self.original(timestamp)
        second = int(time.time())
        current = self.current
        if current[0] != second:
            current = (second, self.original(second))
            self.current = current  # one tuple, swapped whole: safe across threads and greenlets
        return current[1]


class _Collected:
    """Stands in for the socket while gunicorn builds its header block, and keeps the bytes."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class WholeBodyWrite:
    """`Response.write` sending headers and body in one call when the body is all there is."""

    def __init__(self, original: Callable[[Any, bytes], None], send_headers: Callable[[Any], None],
                 response_class: type) -> None:
        self.original = original
        self.send_headers = send_headers
        self.response_class = response_class

    def __call__(self, response: Any, data: bytes) -> None:
        if (type(response) is self.response_class and not response.headers_sent and type(data) is bytes and data
                and not response.chunked and not response._omits_body and response.sent == 0
                and response.response_length == len(data)):
            sock, collected = response.sock, _Collected()
            response.sock = collected
            try:
                self.send_headers(response)  # gunicorn's own header block, into `collected`
            finally:
                response.sock = sock
            response.sent = len(data)
            sock.sendall(collected.data + data)
            return
        self.original(response, data)


def install() -> bool:
    """Patch gunicorn's HTTP/1 response writer in this process (idempotent). False if not applied."""
    global _installed
    with _lock:
        if _installed:
            return True
        try:
            from gunicorn import util
            from gunicorn.http import wsgi
        except ImportError:
            return False
        response = getattr(wsgi, "Response", None)
        process = getattr(response, "process_headers", None)
        date = getattr(util, "http_date", None)
        hoppish = getattr(util, "is_hoppish", None)
        if not (callable(process) and callable(date) and callable(hoppish)):
            return False
        checker = CheckedHeaders(process, hoppish)
        write, send_headers = getattr(response, "write", None), getattr(response, "send_headers", None)
        if callable(write) and callable(send_headers) and _writer_is_known(response):
            writer = WholeBodyWrite(write, send_headers, response)  # type: ignore[arg-type]

            def whole_body_write(self: Any, data: bytes) -> None:
                writer(self, data)

            whole_body_write.writer = writer  # type: ignore[attr-defined]
            response.write = whole_body_write  # type: ignore[union-attr]

        def process_headers(self: Any, headers: Iterable[tuple[str, str]]) -> None:
            checker(self, headers)

        process_headers.checker = checker  # type: ignore[attr-defined]
        response.process_headers = process_headers  # type: ignore[union-attr]
        util.http_date = SecondDate(date)
        _installed = True
        return True


def _writer_is_known(response_class: type) -> bool:
    """The attributes WholeBodyWrite reads are the ones gunicorn's write() keeps (gunicorn >= 25)."""
    import inspect

    try:
        source = inspect.getsource(response_class.write)
    except (OSError, TypeError):
        return False
    return all(name in source for name in ("self.send_headers()", "self._omits_body", "self.response_length",
                                           "self.sent", "self.chunked", "self._emit_body(arg)"))
