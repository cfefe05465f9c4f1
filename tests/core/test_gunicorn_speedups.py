"""gunicorn's response writer with remembered header checks sends exactly what stock gunicorn sends."""
from __future__ import annotations

import email.utils
import time

import pytest
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import InvalidResponseHeader, InvalidResponseHeaderName

from app import gunicorn_speedups
from app.gunicorn_speedups import CheckedHeaders, SecondDate

STOCK = getattr(wsgi.Response.process_headers, "checker", None)
STOCK_PROCESS = STOCK.original if STOCK is not None else wsgi.Response.process_headers
STOCK_DATE = util.http_date.original if isinstance(util.http_date, SecondDate) else util.http_date
STOCK_HOPPISH = util.is_hoppish

HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", "17"),
    ("X-Frame-Options", "DENY"),
    ("X-Padded", "  spaced value\t"),
    ("Connection", "upgrade"),
    ("Upgrade", "websocket"),
    ("Transfer-Encoding", "chunked"),
    ("Keep-Alive", "timeout=5"),
    ("Set-Cookie", "a=1"),
    ("Set-Cookie", "a=1"),  # a repeated pair is sent twice
    ("X-Request-ID", "req_1"),
]


def _response() -> wsgi.Response:
    response = wsgi.Response.__new__(wsgi.Response)
    response.headers = []
    response.response_length = None
    response.upgrade = False
    return response


def _stock(headers: list) -> wsgi.Response:
    response = _response()
    STOCK_PROCESS(response, headers)
    return response


def _checked(checker: CheckedHeaders, headers: list) -> wsgi.Response:
    response = _response()
    checker(response, headers)
    return response


def _state(response: wsgi.Response) -> tuple:
    return response.headers, response.response_length, response.upgrade


def test_same_headers_length_and_upgrade_as_stock_gunicorn_first_and_later_times():
    checker = CheckedHeaders(STOCK_PROCESS, STOCK_HOPPISH)
    expected = _state(_stock(HEADERS))
    assert expected[0][3] == ("X-Padded", "spaced value")  # the case is real: stock strips
    assert expected[1] == 17 and expected[2] is True
    for _ in range(3):  # the first call checks, later ones answer from memory
        assert _state(_checked(checker, HEADERS)) == expected
    remembered = set(checker.checked)
    assert ("X-Frame-Options", "DENY") in remembered
    # Pairs with side effects are never answered from memory.
    assert not {name.lower() for name, _ in remembered} & {"content-length", "connection", "upgrade",
                                                            "transfer-encoding", "keep-alive"}


@pytest.mark.parametrize(("pair", "error"), [
    (("Bad Name", "x"), InvalidResponseHeaderName),
    (("X-Split", "a\r\nInjected: 1"), InvalidResponseHeader),
    (("X-Null", "a\x00b"), InvalidResponseHeader),
    ((b"X-Bytes", "x"), TypeError),
    (("X-Bytes", b"x"), TypeError),
])
def test_invalid_headers_are_refused_exactly_as_stock_gunicorn_refuses_them(pair, error):
    checker = CheckedHeaders(STOCK_PROCESS, STOCK_HOPPISH)
    _checked(checker, [("X-Fine", "1")])  # a remembered pair does not vouch for the next one
    with pytest.raises(error):
        _stock([("X-Fine", "1"), pair])
    with pytest.raises(error):
        _checked(checker, [("X-Fine", "1"), pair])
    assert pair not in checker.checked


def test_unhashable_pairs_still_get_gunicorns_answer():
    checker = CheckedHeaders(STOCK_PROCESS, STOCK_HOPPISH)
    assert _state(_checked(checker, [["X-List", "v"]])) == _state(_stock([["X-List", "v"]]))


def test_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(gunicorn_speedups, "MAX_REMEMBERED", 10)
    checker = CheckedHeaders(STOCK_PROCESS, STOCK_HOPPISH)
    for n in range(55):
        headers = [("X-Request-ID", f"req_{n}")]
        assert _checked(checker, headers).headers == headers
    assert len(checker.checked) <= 10


def test_date_is_the_stock_text_for_the_current_second_and_passes_explicit_times_through():
    date = SecondDate(STOCK_DATE)
    before = int(time.time())
    text = date()
    after = int(time.time())
    assert text in {STOCK_DATE(second) for second in range(before, after + 1)}
    assert email.utils.parsedate_to_datetime(text).timestamp() >= before
    assert date() == text or int(time.time()) != after  # same second: the same text
    assert date(0) == STOCK_DATE(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_install_is_idempotent_and_patches_gunicorns_writer():
    assert gunicorn_speedups.install() is True
    assert gunicorn_speedups.install() is True
    assert isinstance(wsgi.Response.process_headers.checker, CheckedHeaders)
    assert isinstance(util.http_date, SecondDate)
    assert not isinstance(util.http_date.original, SecondDate)  # not wrapped twice
    response = _response()
    wsgi.Response.process_headers(response, HEADERS)
    assert _state(response) == _state(_stock(HEADERS))


def test_each_worker_freezes_what_it_loaded_so_full_collections_skip_it(monkeypatch):
    import gc
    import runpy
    from pathlib import Path

    monkeypatch.setenv("GUNICORN_WORKER_CLASS", "sync")  # no gevent monkey-patching in this process
    settings = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))
    assert gc.get_freeze_count() == 0
    try:
        settings["post_worker_init"](None)
        assert gc.get_freeze_count() > 10_000  # the test process's modules, at least
    finally:
        gc.unfreeze()


def test_values_that_change_every_response_are_checked_by_name_and_not_remembered():
    checker = CheckedHeaders(STOCK_PROCESS, STOCK_HOPPISH)
    for n in range(50):
        headers = [("X-Request-ID", f" req_{n}\t"), ("Server-Timing", f"total;dur={n}.5"),
                   ("X-Frame-Options", "DENY")]
        assert _state(_checked(checker, headers)) == _state(_stock(headers))
    assert sum(1 for name, _ in checker.checked if name == "X-Request-ID") == CheckedHeaders.CHURN
    assert ("X-Frame-Options", "DENY") in checker.checked
    # A known name vouches for printable ASCII only: anything else goes to gunicorn's checks.
    for value, error in (("a\r\nInjected: 1", InvalidResponseHeader), ("a\x00b", InvalidResponseHeader),
                         ("caf\u00e9", None), (b"raw", TypeError)):
        pair = ("X-Request-ID", value)
        if error is None:
            assert _state(_checked(checker, [pair])) == _state(_stock([pair]))
            continue
        with pytest.raises(error):
            _stock([pair])
        with pytest.raises(error):
            _checked(checker, [pair])


class _Request:
    version = (1, 1)

    def __init__(self, method: str = "GET") -> None:
        self.method = method

    def should_close(self) -> bool:
        return False


class _Socket:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.calls.append(bytes(data))


STOCK_WRITE = getattr(wsgi.Response.write, "writer", None)
STOCK_WRITE = STOCK_WRITE.original if STOCK_WRITE is not None else wsgi.Response.write
STOCK_SEND_HEADERS = wsgi.Response.send_headers


def _send(write, method: str, status: str, headers: list, chunks: list[bytes]) -> _Socket:
    sock = _Socket()
    response = wsgi.Response(_Request(method), sock, None)
    response.process_headers = lambda pairs: STOCK_PROCESS(response, pairs)  # type: ignore[method-assign]
    response.start_response(status, headers)
    for chunk in chunks:
        write(response, chunk)
    return sock


@pytest.mark.parametrize(("method", "status", "headers", "chunks"), [
    ("GET", "200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")], [b'{"a":"bcd"}']),
    ("GET", "200 OK", [("Content-Length", "10")], [b"12345", b"67890"]),  # body in two parts
    ("GET", "200 OK", [("Content-Length", "3")], [b"123456"]),  # longer than declared: cut as stock cuts
    ("GET", "200 OK", [("Content-Length", "8")], [b"1234"]),  # shorter than declared
    ("GET", "200 OK", [], [b"chunk one", b"chunk two"]),  # no length: chunked
    ("HEAD", "200 OK", [("Content-Length", "5")], [b"hello"]),  # no body on the wire
    ("GET", "204 No Content", [], [b""]),
    ("GET", "200 OK", [("Content-Length", "0")], [b""]),
])
def test_whole_body_write_sends_exactly_the_stock_bytes(monkeypatch, method, status, headers, chunks):
    monkeypatch.setattr(util, "http_date", lambda timestamp=None: "Fri, 04 Dec 2026 18:00:00 GMT")
    writer = gunicorn_speedups.WholeBodyWrite(STOCK_WRITE, STOCK_SEND_HEADERS, wsgi.Response)
    stock = _send(STOCK_WRITE, method, status, list(headers), list(chunks))
    fused = _send(writer, method, status, list(headers), list(chunks))
    assert b"".join(fused.calls) == b"".join(stock.calls)
    whole = method == "GET" and len(chunks) == 1 and chunks[0] and ("Content-Length", str(len(chunks[0]))) in headers
    # The whole body of a sized response goes out with its headers in one call; the rest as stock.
    assert len(fused.calls) == (1 if whole else len(stock.calls))


def test_whole_body_write_is_installed_on_gunicorns_response():
    gunicorn_speedups.install()
    assert isinstance(wsgi.Response.write.writer, gunicorn_speedups.WholeBodyWrite)
