"""Where documents come from: pasted text, uploaded files, web pages and GitHub repositories.

Each source turns a document into `SourceFile`s (path, text, language) and
reports files it could not read as failures rather than failing the whole
document.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SourceFile:
    path: str | None
    text: str
    language: str | None
    meta: dict = field(default_factory=dict)


@dataclass
class Extracted:
    files: list[SourceFile] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # [{"path", "error"}]
    meta: dict = field(default_factory=dict)
