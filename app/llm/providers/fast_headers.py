"""A quicker `http.client.parse_headers` for the plain header blocks upstreams send.

The standard library hands every response's header block to the `email`
package's feed parser, a general RFC 2822 machine: per response on a chat's
path that was about 8% of the gateway's CPU here (py-spy), for five or six
`name: value` lines. `parse_headers` below builds the same `HTTPMessage`
directly when every line is a plain `name: value` line (a token name, no line
folding, no stray CR, a blank line at the end) and leaves anything else to the
feed parser, so what a caller gets is identical either way (tests compare the
two over random header blocks).

`install()` replaces `http.client.parse_headers`, which `HTTPResponse.begin`
looks up at call time, for the whole process.
"""
from __future__ import annotations

import email.parser
import http.client
import re
from typing import Any, BinaryIO

# A header line the feed parser reads as exactly (name, value with leading blanks dropped):
# its header pattern's name characters (printable ASCII but ':'), at least one of them;
# no CR or LF inside; a line end of CRLF or LF.
_LINE = re.compile(r"^([!-9;-~]+):[ \t]*([^\r\n]*)\r?\n", re.MULTILINE)
_END = (b"\r\n", b"\n")


def _read_lines(fp: BinaryIO) -> list[bytes]:
    # The standard library's own reader, with its line-length and line-count limits.
    return http.client._read_headers(fp)  # type: ignore[attr-defined]


def parse_headers(fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage,
                  ) -> http.client.HTTPMessage:
    lines = _read_lines(fp)
    text = b"".join(lines).decode("iso-8859-1")
    message = _plain(text, len(lines) - 1, _class) if lines[-1] in _END else None
    if message is None:
        message = email.parser.Parser(_class=_class).parsestr(text)
    return message


def _plain(text: str, count: int, cls: type[http.client.HTTPMessage]) -> http.client.HTTPMessage | None:
    """The message the feed parser would build from `text`, or None when it is not plain."""
    pairs = _LINE.findall(text)
    # Every line must be one match: fewer matches means some line was not a plain header line.
    # "From " lines have a space before any colon, so they never match and go to the feed parser.
    if len(pairs) != count:
        return None
    message = cls()
    headers: list[tuple[str, Any]] = message._headers  # type: ignore[attr-defined]
    headers.extend(pairs)
    message.set_payload("")  # the feed parser's body after the blank line: empty
    return message


def install() -> None:
    """Use `parse_headers` for every `http.client` response of this process (idempotent)."""
    http.client.parse_headers = parse_headers  # type: ignore[assignment]
