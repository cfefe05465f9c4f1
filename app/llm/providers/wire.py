"""Keep-alive HTTP/1.1 connections to one upstream, for the JSON POSTs on a chat's path.

A chat through the `openai` SDK's client spent about 1 ms of CPU per call here in
building and sending the request (URL parsing three times, header models,
h11's checks, the connection pool's bookkeeping), several times what the rest
of the gateway needs; the standard library's `http.client` sends the same
request for a fifth of that. This module is only the transport: what is sent
and read is the provider's business.

Connections are per process (a socket must not be shared across a fork) and
go back to the pool only when their response was read to its end and the server
did not ask to close. An idle connection the server has closed in the meantime
is noticed before it is reused (its socket is readable: EOF), so a request is
never written into a dead socket; gevent's monkey-patching makes all of this
cooperative.
"""
from __future__ import annotations

import http.client
import select
import socket
import ssl
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from ...json_encoding import dumps_compact, loads
from ...process import pid as current_pid
from . import fast_headers

MAX_IDLE = 32  # connections kept per upstream and process; more may be open at once


class WireError(Exception):
    """The request failed before an HTTP status arrived: `kind` is "timeout" or "connection"."""

    def __init__(self, kind: str, cause: BaseException):
        super().__init__(f"{kind}: {type(cause).__name__}")
        self.kind = kind
        self.cause = cause


def proxied(url: str) -> bool:
    """Would an HTTP client that honours the environment (HTTP(S)_PROXY, NO_PROXY) send `url` through a proxy?"""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class Response:
    """A response whose body is still on the wire: `json()`, `iter_lines()`, then `close()`."""

    def __init__(self, pool: Pool, connection: http.client.HTTPConnection, raw: http.client.HTTPResponse):
        self._pool = pool
        self._connection: http.client.HTTPConnection | None = connection
        self._raw = raw
        self.status_code = raw.status
        self.headers = raw.headers

    def read(self) -> bytes:
        try:
            data = self._raw.read()
        except (OSError, http.client.HTTPException) as error:
            self._discard()
            raise _wire_error(error) from error
        self.close()
        return data

    def json(self) -> Any:
        data = self.read()
        try:
            return loads(data)
        except ValueError:
            return None

    def iter_lines(self) -> Iterator[str]:
        """The body's lines without their line ends (server-sent events); ends with the body."""
        readline = self._raw.readline
        try:
            while True:
                line = readline()
                if not line:
                    return
                yield line.rstrip(b"\r\n").decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as error:
            self._discard()
            raise _wire_error(error) from error

    def close(self) -> None:
        """Give the connection back if its response was read to the end, else close it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._raw.isclosed() and not self._raw.will_close:
            self._pool.release(connection)
        else:
            self._raw.close()
            connection.close()

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _no_delay(sock: socket.socket | None) -> None:
    # A request is a small write that must leave at once: with Nagle's algorithm on, it waits
    # while data sent earlier is unacknowledged (a delayed ACK can hold it 40 ms).
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _LowLatency:
    sock: socket.socket | None
    _buffer: list[bytes]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _no_delay(self.sock)

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        # http.client sends the header block and the body with two sends; a JSON body goes
        # with its headers in one (one system call and one segment instead of two).
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", message_body))  # joined: headers CRLF CRLF body
            message = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(message)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPConnection(_LowLatency, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_LowLatency, http.client.HTTPSConnection):
    pass


class Pool:
    """Idle keep-alive connections to one base URL (scheme, host, port, path prefix)."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        fast_headers.install()  # responses' header blocks without the email package (see fast_headers)
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        # Host and the body's headers are added by http.client per request.
        self.headers = {"Accept": "application/json", "Content-Type": "application/json", **headers}
        self._ssl = ssl.create_default_context() if self.https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._pid = current_pid()

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            return _HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._ssl)
        return _HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _acquire(self) -> http.client.HTTPConnection | None:
        if self._pid != current_pid():  # forked: the parent's sockets are not ours to use
            self._idle, self._pid = [], current_pid()
        while self._idle:
            connection = self._idle.pop()
            sock = connection.sock
            # An idle keep-alive socket has nothing to read; readable means EOF (the server
            # closed it) or bytes nobody asked for: either way it cannot carry a request.
            if sock is not None and not select.select([sock], [], [], 0)[0]:
                return connection
            connection.close()
        return None

    def release(self, connection: http.client.HTTPConnection) -> None:
        if self._pid == current_pid() and len(self._idle) < MAX_IDLE and connection.sock is not None:
            self._idle.append(connection)
        else:
            connection.close()

    def post(self, path: str, body: dict[str, Any]) -> Response:
        """Send `body` as JSON; the response's status and headers have arrived, its body has not."""
        data = dumps_compact(body)
        connection = self._acquire() or self._connect()
        try:
            connection.request("POST", self.prefix + path, body=data, headers=self.headers)
            raw = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise _wire_error(error) from error
        return Response(self, connection, raw)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _wire_error(error: BaseException) -> WireError:
    return WireError("timeout" if isinstance(error, TimeoutError) else "connection", error)
