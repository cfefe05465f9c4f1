"""Turning bytes into text: encodings, binary detection, PDF (pypdf)."""
from __future__ import annotations

import io

from app.errors import ApiError

from ..chunking import detect_language

PDF_MAGIC = b"%PDF-"
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/x-yaml",
              "application/toml", "application/x-sh", "application/sql")


class UnsupportedMedia(ApiError):
    status, code, message = 415, "UNSUPPORTED_MEDIA_TYPE", "This kind of file cannot be indexed."


def looks_binary(data: bytes) -> bool:
    """NUL bytes, or many control characters, in the first 8 KiB."""
    head = data[:8192]
    if not head:
        return False
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return controls / len(head) > 0.1


def is_pdf(name: str | None, data: bytes, content_type: str | None = None) -> bool:
    return data.startswith(PDF_MAGIC) or (content_type or "").startswith("application/pdf") or (
        bool(name) and str(name).lower().endswith(".pdf") and data[:1024].find(PDF_MAGIC) != -1)


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnsupportedMedia("The PDF is encrypted.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as error:
        raise UnsupportedMedia(f"The PDF could not be read: {error}.") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        raise UnsupportedMedia("The PDF has no extractable text (scanned images need OCR first).")
    return text


def decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def to_text(name: str | None, data: bytes, content_type: str | None = None) -> tuple[str, str | None]:
    """(text, language) of a file; 415 for binaries and unreadable PDFs."""
    if is_pdf(name, data, content_type):
        return pdf_text(data), "pdf"
    if looks_binary(data):
        raise UnsupportedMedia(f"{name or 'The file'} looks binary; send text, source code or PDF.",
                               details={"path": name, "content_type": content_type})
    text = decode_text(data).replace("\r\n", "\n").replace("\x00", "")
    language = detect_language(name)
    if language is None and (content_type or "").startswith("text/html"):
        language = "html"
    if language is None and (content_type or "").startswith("text/markdown"):
        language = "markdown"
    return text, language
