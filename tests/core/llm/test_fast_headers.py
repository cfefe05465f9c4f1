"""The quick header parser gives exactly what http.client's email-based one gives."""
from __future__ import annotations

import email.parser
import http.client
import io
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.llm.providers import fast_headers

# Plain lines (the fast path) mixed with everything the feed parser treats differently:
# folded lines, lines without a colon, "From " lines, empty names, spaces before the colon,
# stray CRs, non-ASCII bytes, bare LF line ends.
names = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"),
                min_size=1, max_size=12)
values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t\xe9"),
                 max_size=20)
plain = st.builds(lambda n, v, end: f"{n}:{v}{end}".encode("iso-8859-1"), names, values,
                  st.sampled_from(["\r\n", "\n"]))
odd = st.sampled_from([b" folded continuation\r\n", b"\tfolded\r\n", b"no colon here\r\n", b"From someone\r\n",
                       b": empty name\r\n", b"Name : spaced\r\n", b"Stray: a\rb\r\n", b"Bare-CR: x\r",
                       b"Latin: caf\xe9\r\n", b"Key:\r\n", b"Key:    \r\n"])
blocks = st.tuples(st.lists(st.one_of(plain, plain, plain, odd), max_size=8),
                   st.sampled_from([b"\r\n", b"\n", b""]), st.binary(max_size=8))


def _both(raw: bytes) -> tuple[http.client.HTTPMessage, bytes, http.client.HTTPMessage, bytes]:
    fast_fp, standard_fp = io.BytesIO(raw), io.BytesIO(raw)
    fast = fast_headers.parse_headers(fast_fp)
    standard_lines = http.client._read_headers(standard_fp)  # the standard path, step by step
    standard = email.parser.Parser(_class=http.client.HTTPMessage).parsestr(
        b"".join(standard_lines).decode("iso-8859-1"))
    return fast, fast_fp.read(), standard, standard_fp.read()


def _state(message: http.client.HTTPMessage) -> dict:
    state = dict(vars(message))
    state["defects"] = [(type(d), str(d)) for d in message.defects]  # defects compare by identity
    return state


@settings(max_examples=400, deadline=None)
@given(blocks)
def test_same_message_as_the_email_parser(block) -> None:
    lines, end, body = block
    fast, fast_rest, standard, standard_rest = _both(b"".join(lines) + end + body)
    assert _state(fast) == _state(standard)
    assert fast.items() == standard.items()
    assert fast_rest == standard_rest  # the body is left unread for the response


def test_plain_block_takes_the_fast_path(monkeypatch) -> None:
    called = []
    monkeypatch.setattr(email.parser.Parser, "parsestr", lambda *a, **k: called.append(a))
    message = fast_headers.parse_headers(io.BytesIO(b"Content-Length: 12\r\nX-A:  v \r\n\r\nbody"))
    assert called == []
    assert message["content-length"] == "12" and message.get("x-a") == "v "
    assert message.get_all("X-A") == ["v "]


def test_limits_of_the_standard_reader_still_apply() -> None:
    with pytest.raises(http.client.LineTooLong):
        fast_headers.parse_headers(io.BytesIO(b"X: " + b"a" * 70000 + b"\r\n\r\n"))
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        fast_headers.parse_headers(io.BytesIO(b"X: a\r\n" * 101 + b"\r\n"))


def test_installed_responses_read_chunked_and_sized_bodies() -> None:
    """Through a real socket: framing still follows the headers (length, chunked, keep-alive)."""
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
               b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"]
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for answer in answers:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    previous = http.client.parse_headers
    fast_headers.install()
    assert http.client.parse_headers is fast_headers.parse_headers
    try:
        client = http.client.HTTPConnection("127.0.0.1", listener.getsockname()[1], timeout=5)
        got = []
        for _ in answers:
            client.request("GET", "/")
            response = client.getresponse()
            got.append((response.status, response.read(), response.getheader("content-type"), response.will_close))
        client.close()
    finally:
        http.client.parse_headers = previous
        listener.close()
    assert got == [(200, b"hello", "text/plain", False), (200, b"abcde", None, False), (404, b"no", None, True)]
