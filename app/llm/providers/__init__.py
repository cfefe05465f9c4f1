"""Built-in provider kinds: `openai` (any OpenAI-compatible server), `anthropic`, `llamacpp` (in-process GGUF).

Each module imports its SDK lazily, when the first provider of that kind is built.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..types import ProviderError

log = logging.getLogger("lunaos.llm")
MODELS_CACHE_SECONDS = 60.0

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


class ListedModels:
    """`list_models` for SDK-backed providers: the configured models, else the API's own listing
    (`client().models.list()`), cached per process for MODELS_CACHE_SECONDS."""

    _listed: tuple[float, list[str]] | None = None
    models: list[str]
    name: str
    timeout: float
    client: Callable[[], Any]  # the provider's SDK client

    def list_models(self) -> list[str]:
        if self.models:
            return list(self.models)
        now = time.monotonic()
        if self._listed is not None and now - self._listed[0] < MODELS_CACHE_SECONDS:
            return list(self._listed[1])
        try:
            listed = sorted(m.id for m in self.client().models.list(timeout=min(self.timeout, 5.0)))
        except Exception as error:  # noqa: BLE001 - an unreachable API lists nothing
            log.info("llm provider %s: listing models failed: %s", self.name, type(error).__name__)
            listed = []
        self._listed = (now, listed)
        return list(listed)

    @property
    def default_model(self) -> str | None:
        if self.models:
            return self.models[0]
        listed = self.list_models()
        return listed[0] if listed else None
