"""The provider protocol. A provider kind is a subclass; an instance is one configured upstream.

Kinds are registered by name (`openai`, `anthropic`, `llamacpp`, and third-party
kinds from the `lunaos.llm_providers` entry-point group); `LLM_PROVIDERS`
entries name a kind in `type` and give the instance its settings.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

from .types import ChatRequest, ChatResult, Message, StreamChunk, Usage

DEFAULT_CONTEXT_WINDOW = 4096


class Provider(ABC):
    kind: ClassVar[str]  # the `type` value in LLM_PROVIDERS
    # Keys an LLM_PROVIDERS entry of this kind may have beyond the common ones
    # (name, type, base_url, api_key, models, priority, timeout, context_window); None: any.
    extra_settings: ClassVar[frozenset[str] | None] = None

    def __init__(self, name: str, settings: dict[str, Any]):
        self.name = name  # unique instance name, e.g. "lmstudio"
        self.settings = settings
        self.models: list[str] = list(settings.get("models") or [])
        self.priority: int = int(settings.get("priority", 100))

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> list[str]:
        """Problems with an entry's kind-specific settings, each a short phrase (empty: fine)."""
        return []

    @classmethod
    def settings_defaults(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Settings taken from the app config when the entry leaves them out (e.g. an API key)."""
        return {}

    @property
    def timeout(self) -> float:
        return float(self.settings.get("timeout") or 60.0)

    @property
    def context_window(self) -> int:
        return int(self.settings.get("context_window") or DEFAULT_CONTEXT_WINDOW)

    @property
    def default_model(self) -> str | None:
        return self.models[0] if self.models else None

    def serves(self, model: str | None) -> bool:
        """True if a request for `model` may go here (None: any provider's default)."""
        return model is None or not self.models or model in self.models

    @abstractmethod
    def chat(self, request: ChatRequest) -> ChatResult:
        """One completion. Raise `ProviderError` on upstream failure."""

    @abstractmethod
    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        """Yield deltas; the last chunk carries `finish_reason` and `usage` (estimated if upstream gave none).
        Raise `ProviderError`; before the first yielded delta the router may fail over."""

    def list_models(self) -> list[str]:
        return list(self.models)

    def health(self) -> dict[str, Any]:
        """Cheap reachability check: `{"status": "ok"|"down", "detail": str}`."""
        return {"status": "ok"}

    def count_tokens(self, text: str) -> int:
        """Fallback token count when upstream reports none: about four characters per token."""
        return max(1, (len(text) + 3) // 4) if text else 0

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        """Tokens of a prompt: its texts plus a few per message for the chat template's role markers."""
        return sum(self.count_tokens(m.content) + 4 for m in messages) + 2

    def estimate_usage(self, request: ChatRequest, completion: str) -> Usage:
        """Usage counted here, for an upstream that reported none."""
        completion_tokens = self.count_tokens(completion)
        if request.max_tokens:  # an estimate, yet never more than the upstream was allowed to return
            completion_tokens = min(completion_tokens, request.max_tokens)
        return Usage(self.count_prompt_tokens(request.messages), completion_tokens, estimated=True)

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing to release
        """Release clients/models (tests, reconfiguration)."""
