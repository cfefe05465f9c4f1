"""What every chunking strategy shares: the Chunk, token budgets and character-offset helpers."""
from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TokenCounter = Callable[[str], int]  # tokens of a text as the embedder counts them (with special tokens)


@dataclass
class Chunk:
    content: str
    start_line: int  # 1-based, inclusive
    end_line: int
    symbol: str | None = None
    token_count: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """Chunk sizes in the embedder's tokens: at most `max_tokens` (kept under its window), `overlap` shared
    by neighbours (fixed/recursive), and pieces under `min_tokens` merged with their neighbours (code)."""

    max_tokens: int = 200
    overlap: int = 20
    min_tokens: int = 40

    def __post_init__(self) -> None:
        if self.max_tokens < 16:
            raise ValueError("max_tokens must be at least 16")
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise ValueError("overlap must be from 0 to half of max_tokens")


class Lines:
    """Maps character offsets of a text to 1-based line numbers."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0]
        position = text.find("\n")
        while position != -1:
            self.starts.append(position + 1)
            position = text.find("\n", position + 1)

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, max(offset, 0)) or 1

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Lines of text[start:end], trailing newline not counted as a line of its own."""
        last = end - 1 if end > start else start
        while last > start and self.text[last] in "\r\n":
            last -= 1
        return self.line_of(start), self.line_of(last)


def make_chunk(text: str, lines: Lines, start: int, end: int, count: TokenCounter, **extra: Any) -> Chunk | None:
    """A chunk of text[start:end] with surrounding whitespace trimmed (None when nothing is left)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start >= end:
        return None
    content = text[start:end]
    first, last = lines.span(start, end)
    return Chunk(content=content, start_line=first, end_line=last, token_count=count(content), **extra)
