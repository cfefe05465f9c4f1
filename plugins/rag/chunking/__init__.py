"""Chunking strategies (`code`, `recursive`, `semantic`, `fixed`) and language detection by file name."""
from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Budget, Chunk
from .code import chunk_code
from .fixed import chunk_fixed
from .recursive import chunk_recursive
from .semantic import chunk_semantic

__all__ = ["Budget", "Chunk", "STRATEGIES", "chunk", "default_strategy", "detect_language", "is_code"]

STRATEGIES = ("code", "recursive", "semantic", "fixed")
EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".rb": "ruby", ".md": "markdown", ".markdown": "markdown",
    ".rst": "rst", ".txt": "text", ".html": "html", ".htm": "html", ".json": "json", ".yaml": "yaml",
    ".yml": "yaml", ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".sh": "bash", ".bash": "bash", ".sql": "sql",
    ".css": "css", ".scss": "css", ".kt": "kotlin", ".swift": "swift", ".php": "php", ".cs": "csharp",
    ".scala": "scala", ".lua": "lua", ".r": "r", ".pdf": "pdf", ".csv": "csv", ".xml": "xml",
}
FILENAMES = {"dockerfile": "dockerfile", "makefile": "make", "readme": "markdown"}
CODE_LANGUAGES = {"python", "javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp", "ruby", "bash",
                  "kotlin", "swift", "php", "csharp", "scala", "lua", "r", "sql", "css", "dockerfile", "make"}


def detect_language(path: str | None) -> str | None:
    if not path:
        return None
    name = posixpath.basename(path.replace("\\", "/")).lower()
    if name in FILENAMES:
        return FILENAMES[name]
    return EXTENSIONS.get(posixpath.splitext(name)[1])


def is_code(language: str | None) -> bool:
    return language in CODE_LANGUAGES


def default_strategy(language: str | None) -> str:
    return "code" if is_code(language) else "recursive"


def chunk(text: str, strategy: str, *, language: str | None, budget: Budget, embedder: Any,
          semantic_percentile: float = 90.0) -> list[Chunk]:
    """Split `text` with `strategy`, sizing chunks in `embedder`'s tokens."""
    tokenizer = getattr(embedder, "tokenizer", None)
    count = embedder.count_tokens
    if tokenizer is None:
        tokenizer = _CharTokenizer()
    if strategy == "code":
        return chunk_code(text, language, budget, tokenizer, count)
    if strategy == "recursive":
        return chunk_recursive(text, budget, tokenizer, count, language)
    if strategy == "fixed":
        return chunk_fixed(text, budget, tokenizer, count)
    if strategy == "semantic":
        def encode(sentences: Sequence[str]) -> np.ndarray:
            return embedder.encode(sentences)

        return chunk_semantic(text, budget, tokenizer, count, encode, semantic_percentile)
    raise ValueError(f"unknown chunking strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


class _CharTokenizer:
    """Token offsets for embedders without a tokenizer: words and punctuation, about what BPE does."""

    def __call__(self, text: str, **kwargs: Any) -> dict[str, Any]:
        import re

        return {"offset_mapping": [(m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]", text)]}


