"""Built-in provider kinds: `openai` (any OpenAI-compatible server), `anthropic`, `llamacpp` (in-process GGUF).

Each module imports its SDK lazily, when the first provider of that kind is built.
"""
from __future__ import annotations

from ..types import ProviderError

FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "stop",
                  "function_call": "stop", "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "refusal": "content_filter", "pause_turn": "stop", "tool_use": "stop"}


def finish_reason(value: str | None) -> str:
    """Upstream finish/stop reasons mapped onto ours: stop, length, content_filter."""
    return FINISH_REASONS.get(value or "stop", "stop")


def retryable_status(status: int | None) -> bool:
    """May another provider (or a later try) succeed? No only when the request itself is at fault.

    401/403/404 are the provider's problem (a wrong key, base_url or model list), so they fail
    over too; if every provider answers 404 the router reports the model as not found.
    """
    if status is None:
        return True
    return status not in (400, 413, 422)


def status_error(provider: str, status: int, message: str) -> ProviderError:
    return ProviderError(message[:500], provider=provider, status=status, retryable=retryable_status(status))
