"""`recursive`: split at the largest natural boundary that fits (sections, paragraphs, lines, sentences,
words), with separators chosen per language, then pack neighbouring pieces up to the token budget."""
from __future__ import annotations

import re
from typing import Any

from .base import Budget, Chunk, Lines, TokenCounter, make_chunk
from .fixed import SPECIAL_TOKENS, char_windows, token_spans

# Regular expressions of boundaries, strongest first; a piece starts at each match.
_PROSE = [r"\n#{1,6} ", r"\n\n+", r"\n", r"(?<=[.!?])\s+", r"\s+"]
_CODE_COMMON = [r"\n\n+", r"\n", r"\s+"]
SEPARATORS: dict[str, list[str]] = {
    "python": [r"\nclass ", r"\n(?:async )?def ", r"\n\s+(?:async )?def ", *_CODE_COMMON],
    "javascript": [r"\n(?:export )?(?:default )?(?:async )?function ", r"\n(?:export )?class ",
                   r"\n(?:export )?(?:const|let|var) ", *_CODE_COMMON],
    "typescript": [r"\n(?:export )?(?:default )?(?:async )?function ", r"\n(?:export )?(?:abstract )?class ",
                   r"\n(?:export )?interface ", r"\n(?:export )?type ", r"\n(?:export )?(?:const|let|var) ",
                   *_CODE_COMMON],
    "go": [r"\nfunc ", r"\ntype ", r"\nvar ", r"\nconst ", *_CODE_COMMON],
    "rust": [r"\n(?:pub(?:\([a-z]+\))? )?fn ", r"\nimpl", r"\n(?:pub )?struct ", r"\n(?:pub )?enum ",
             r"\n(?:pub )?trait ", r"\nmod ", *_CODE_COMMON],
    "java": [r"\n\s*(?:public|private|protected)?\s*(?:static )?(?:final )?class ", r"\n\s+(?:public|private|"
             r"protected|static|final|synchronized|abstract)[\w<>\[\], ]* \w+\(", *_CODE_COMMON],
    "c": [r"\n(?=[A-Za-z_][\w \*]*\([^;]*\)\s*\{)", r"\nstruct ", *_CODE_COMMON],
    "cpp": [r"\nclass ", r"\nnamespace ", r"\n(?=[A-Za-z_][\w:<> \*&]*\([^;]*\)\s*(?:const\s*)?\{)",
            *_CODE_COMMON],
    "ruby": [r"\nclass ", r"\nmodule ", r"\n\s*def ", *_CODE_COMMON],
    "markdown": [r"\n#{1,2} ", r"\n#{3,6} ", r"\n```", r"\n\n+", r"\n", r"(?<=[.!?])\s+", r"\s+"],
    "html": [r"\n<(?:h[1-6]|section|article|div|p|ul|ol|table)\b", r"\n\n+", r"\n", r"\s+"],
}
_compiled: dict[str, re.Pattern[str]] = {}


def separators_for(language: str | None) -> list[str]:
    return SEPARATORS.get(language or "", _PROSE)


def _pattern(separator: str) -> re.Pattern[str]:
    if separator not in _compiled:
        _compiled[separator] = re.compile(separator)
    return _compiled[separator]


class _Splitter:
    def __init__(self, text: str, budget: Budget, tokenizer: Any, count: TokenCounter, separators: list[str]):
        self.text = text
        self.limit = budget.max_tokens - SPECIAL_TOKENS
        self.overlap = budget.overlap
        self.tokenizer = tokenizer
        self.count = count
        self.separators = separators

    def tokens(self, start: int, end: int) -> int:
        return max(self.count(self.text[start:end]) - SPECIAL_TOKENS, 0)

    def pieces(self, start: int, end: int, level: int) -> list[tuple[int, int, int]]:
        """(start, end, tokens) pieces of text[start:end], each within the limit."""
        size = self.tokens(start, end)
        if size <= self.limit:
            return [(start, end, size)]
        if level >= len(self.separators):
            spans = [(s, e) for s, e in token_spans(self.text[start:end], self.tokenizer)]
            spans = [(s + start, e + start) for s, e in spans]
            return [(s, e, self.tokens(s, e)) for s, e in char_windows(self.text, spans, self.limit, 0, start, end)]
        cuts = [m.start() + start for m in _pattern(self.separators[level]).finditer(self.text, start, end)
                if m.start() > 0]
        cuts = [c for c in cuts if start < c < end]
        if not cuts:
            return self.pieces(start, end, level + 1)
        out: list[tuple[int, int, int]] = []
        bounds = [start, *cuts, end]
        for s, e in zip(bounds, bounds[1:], strict=False):
            out.extend(self.pieces(s, e, level + 1))
        return out

    def pack(self, pieces: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
        """Greedy packing of consecutive pieces; the next chunk starts with about `overlap` tokens of the last."""
        chunks: list[tuple[int, int]] = []
        current: list[tuple[int, int, int]] = []
        total = 0
        for piece in pieces:
            if current and total + piece[2] > self.limit:
                chunks.append((current[0][0], current[-1][1]))
                carried: list[tuple[int, int, int]] = []
                kept = 0
                for previous in reversed(current):
                    if kept + previous[2] > self.overlap or kept + previous[2] + piece[2] > self.limit:
                        break
                    carried.insert(0, previous)
                    kept += previous[2]
                current, total = carried, kept
            current.append(piece)
            total += piece[2]
        if current:
            chunks.append((current[0][0], current[-1][1]))
        return chunks


def chunk_recursive(text: str, budget: Budget, tokenizer: Any, count: TokenCounter,
                    language: str | None = None) -> list[Chunk]:
    splitter = _Splitter(text, budget, tokenizer, count, separators_for(language))
    lines = Lines(text)
    spans = splitter.pack(splitter.pieces(0, len(text), 0))
    chunks = [make_chunk(text, lines, s, e, count) for s, e in spans]
    return [c for c in chunks if c is not None]
