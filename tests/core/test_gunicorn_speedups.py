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
