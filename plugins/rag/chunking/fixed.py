"""`fixed`: windows of `max_tokens` tokens, neighbours sharing `overlap` tokens."""
from __future__ import annotations

from typing import Any

from .base import Budget, Chunk, Lines, TokenCounter, make_chunk

SPECIAL_TOKENS = 2  # [CLS] and [SEP] of BERT-style models


def token_spans(text: str, tokenizer: Any) -> list[tuple[int, int]]:
    """Character span of every token (without special tokens)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                        verbose=False)
    return [(int(s), int(e)) for s, e in encoded["offset_mapping"] if e > s]


def char_windows(text: str, spans: list[tuple[int, int]], size: int, overlap: int,
                 start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Character ranges covering `size` tokens each, stepping by `size - overlap` tokens."""
    end = len(text) if end is None else end
    if not spans:
        return [(start, end)] if text[start:end].strip() else []
    windows, step, index = [], max(1, size - overlap), 0
    while index < len(spans):
        last = min(index + size, len(spans)) - 1
        first_char = start if index == 0 else spans[index][0]
        last_char = end if last == len(spans) - 1 else spans[last][1]
        windows.append((first_char, last_char))
        if last == len(spans) - 1:
            break
        index += step
    return windows


def chunk_fixed(text: str, budget: Budget, tokenizer: Any, count: TokenCounter) -> list[Chunk]:
    lines = Lines(text)
    size = budget.max_tokens - SPECIAL_TOKENS
    windows = char_windows(text, token_spans(text, tokenizer), size, budget.overlap)
    chunks = [make_chunk(text, lines, s, e, count) for s, e in windows]
    return [c for c in chunks if c is not None]
