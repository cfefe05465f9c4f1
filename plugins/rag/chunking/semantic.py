"""`semantic`: boundaries where the meaning moves on.

Sentences (and paragraph breaks) are embedded; where the cosine distance
between neighbouring sentences is among the largest (above the
`percentile`-th of the text's distances), a new chunk begins. Chunks also end
at the token budget, and an oversize sentence is split like `recursive`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .base import Budget, Chunk, Lines, TokenCounter, make_chunk
from .fixed import SPECIAL_TOKENS
from .recursive import chunk_recursive

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|\n\s*\n+")
Encode = Callable[[Sequence[str]], np.ndarray]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if text[start:match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def chunk_semantic(text: str, budget: Budget, tokenizer: Any, count: TokenCounter, encode: Encode,
                   percentile: float = 90.0) -> list[Chunk]:
    spans = sentence_spans(text)
    if len(spans) <= 1:
        return chunk_recursive(text, budget, tokenizer, count)
    vectors = encode([text[s:e] for s, e in spans])
    distances = 1.0 - np.sum(vectors[:-1] * vectors[1:], axis=1)
    threshold = float(np.percentile(distances, percentile))
    limit = budget.max_tokens - SPECIAL_TOKENS
    lines = Lines(text)
    groups: list[tuple[int, int]] = []
    group_start, total = 0, 0
    for index, (s, e) in enumerate(spans):
        size = max(count(text[s:e]) - SPECIAL_TOKENS, 0)
        if index > group_start and (total + size > limit or distances[index - 1] > threshold):
            groups.append((group_start, index - 1))
            group_start, total = index, 0
        total += size
    groups.append((group_start, len(spans) - 1))
    chunks: list[Chunk] = []
    for first, last in groups:
        start, end = spans[first][0], spans[last][1]
        chunk = make_chunk(text, lines, start, end, count)
        if chunk is None:
            continue
        if chunk.token_count > budget.max_tokens:  # one sentence larger than the budget
            for part in chunk_recursive(text[start:end], budget, tokenizer, count):
                offset = chunk.start_line - 1
                part.start_line += offset
                part.end_line += offset
                chunks.append(part)
            continue
        chunks.append(chunk)
    return chunks
