"""The `url` source: one web page or file, fetched with the SSRF guard."""
from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from .. import ssrf
from . import Extracted, SourceFile
from .files import to_text

_DROP = re.compile(r"<(script|style|noscript|svg|head)\b.*?</\1\s*>", re.S | re.I)
_BLOCK = re.compile(r"</?(?:p|div|section|article|br|li|ul|ol|tr|table|h[1-6]|pre|blockquote)\b[^>]*>", re.I)
_TAG = re.compile(r"<[^>]+>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.S | re.I)


def html_to_text(markup: str) -> tuple[str, str | None]:
    title_match = _TITLE.search(markup)
    title = html.unescape(title_match.group(1)).strip() if title_match else None
    body = _DROP.sub(" ", markup)
    body = _BLOCK.sub("\n", body)
    body = html.unescape(_TAG.sub(" ", body))
    lines = [" ".join(line.split()) for line in body.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text, title


def extract(url: str, limits: ssrf.Limits, allowed_hosts: list[str]) -> Extracted:
    fetched = ssrf.fetch(url, limits, allowed_hosts=allowed_hosts)
    name = urlsplit(fetched.url).path.rsplit("/", 1)[-1] or None
    content_type = fetched.content_type.split(";")[0].strip().lower()
    meta = {"url": fetched.url, "content_type": content_type}
    if content_type in ("text/html", "application/xhtml+xml"):
        text, title = html_to_text(ssrf_decode(fetched))
        if title:
            meta["title"] = title
        language = "markdown"  # headings and paragraphs survive as lines: prose separators fit
    else:
        text, language = to_text(name, fetched.body, content_type)
    return Extracted(files=[SourceFile(path=fetched.url, text=text, language=language)], meta=meta)


def ssrf_decode(fetched: ssrf.Fetched) -> str:
    match = re.search(r"charset=([\w-]+)", fetched.content_type, re.I)
    encoding = match.group(1) if match else "utf-8"
    try:
        return fetched.body.decode(encoding, errors="replace")
    except LookupError:
        return fetched.body.decode("utf-8", errors="replace")
