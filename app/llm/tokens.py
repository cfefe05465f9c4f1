"""Context windows and token counts, for trimming conversation history to what a model can take.

A provider's `context_window` setting wins; otherwise well-known model families
are matched by name, and anything unknown gets a conservative 4096 tokens.
Token counts come from the provider serving the model (the in-process model's
own tokenizer) or an estimate of about four characters per token.
"""
from __future__ import annotations

from .base import DEFAULT_CONTEXT_WINDOW

# Longest prefix wins. Figures are the vendors' published context lengths.
KNOWN_WINDOWS = {
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4": 200_000,
    "claude": 200_000,
    "llama-3.1": 131_072,
    "llama-3.2": 131_072,
    "llama3.1": 131_072,
    "llama3.2": 131_072,
    "qwen2.5": 32_768,
    "mistral": 32_768,
    "smollm2": 8_192,
}


def known_window(model: str | None) -> int | None:
    if not model:
        return None
    name = model.lower().rsplit("/", 1)[-1]
    matches = [prefix for prefix in KNOWN_WINDOWS if name.startswith(prefix)]
    return KNOWN_WINDOWS[max(matches, key=len)] if matches else None


def estimate(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


__all__ = ["DEFAULT_CONTEXT_WINDOW", "KNOWN_WINDOWS", "estimate", "known_window"]
