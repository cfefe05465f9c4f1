"""`anthropic`: the Messages API through the official SDK, mapped onto the common protocol.

Differences from the OpenAI shape that the mapping handles:
- system messages go in the top-level `system` field, not in `messages`;
- roles must alternate user/assistant and start with user: consecutive
  messages of one role are joined, a conversation opening with the assistant
  gets a short user turn before it, `tool` output is sent as user text;
- `max_tokens` is required (the request's, else the entry's `max_tokens`, else 4096);
- temperature ranges 0-1 there (ours 0-2): higher values are capped at 1;
- streams are SSE events: `message_start` (input tokens), `content_block_delta`
  (text), `message_delta` (stop reason, output tokens), `message_stop`.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from ...config import ConfigError
from ..base import Provider
from ..types import ChatRequest, ChatResult, Message, ProviderError, StreamChunk, Usage
from . import ListedModels, finish_reason, status_error
from ...process import pid as current_pid

log = logging.getLogger("lunaos.llm")
ANTHROPIC_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
OPENING_TURN = "(The conversation begins.)"


def wire_messages(messages: list[Message]) -> tuple[str | None, list[dict[str, str]]]:
    """(system prompt, alternating user/assistant turns starting with user)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content.strip())
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system" or not m.content.strip():
            continue  # the API refuses empty text blocks
        role = "assistant" if m.role == "assistant" else "user"
        text = f"Tool output:\n{m.content}" if m.role == "tool" else m.content
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": OPENING_TURN})
    return (system or None), turns


class AnthropicProvider(ListedModels, Provider):
    kind = "anthropic"
    extra_settings = frozenset({"max_tokens", "headers"})

    def __init__(self, name: str, settings: dict[str, Any]):
        super().__init__(name, settings)
        base_url = (settings.get("base_url") or ANTHROPIC_URL).rstrip("/")
        self.base_url = base_url[:-3] if base_url.endswith("/v1") else base_url  # the SDK adds /v1/messages
        self.api_key = settings.get("api_key") or ""
        if not self.api_key:
            raise ConfigError(f"LLM provider {name!r} (type anthropic) has no key: set its api_key or "
                              "LUNAOS_ANTHROPIC_API_KEY")
        self.max_tokens = int(settings.get("max_tokens") or DEFAULT_MAX_TOKENS)
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()
        self._listed: tuple[float, list[str]] | None = None

    @classmethod
    def settings_defaults(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {"api_key": config.get("ANTHROPIC_API_KEY") or ""}

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> list[str]:
        problems = []
        value = settings.get("max_tokens")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append("'max_tokens' must be a positive integer (the default answer length)")
        headers = settings.get("headers")
        if headers is not None and (not isinstance(headers, dict)
                                    or not all(isinstance(v, str) for v in headers.values())):
            problems.append("'headers' must be an object of header names to strings")
        return problems

    def client(self) -> Any:
        if self._client is None or self._pid != current_pid():
            with self._lock:
                if self._client is None or self._pid != current_pid():
                    import anthropic

                    self._client = anthropic.Anthropic(api_key=self.api_key, base_url=self.base_url,
                                                       timeout=self.timeout, max_retries=0,
                                                       default_headers=self.settings.get("headers"))
                    self._pid = current_pid()
        return self._client

    def _error(self, error: Exception) -> ProviderError:
        import anthropic

        if isinstance(error, anthropic.APIStatusError):
            return status_error(self.name, error.status_code, _message(error))
        if isinstance(error, anthropic.APITimeoutError):
            return ProviderError(f"timed out after {self.timeout:g}s", provider=self.name)
        if isinstance(error, anthropic.APIConnectionError):
            cause = error.__cause__ or error
            return ProviderError(f"connection failed: {type(cause).__name__}", provider=self.name)
        return ProviderError(f"{type(error).__name__}: {error}"[:300], provider=self.name)

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        system, turns = wire_messages(request.messages)
        # Sampling fields are part of the wire format but not of every SDK release's signature.
        sampling: dict[str, Any] = {"temperature": min(float(request.temperature), 1.0)}
        if request.top_p is not None:
            sampling["top_p"] = request.top_p
        params: dict[str, Any] = {"model": request.model or self.default_model or "", "messages": turns,
                                  "max_tokens": request.max_tokens or self.max_tokens, "extra_body": sampling}
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.user:
            params["metadata"] = {"user_id": request.user}
        return params

    def chat(self, request: ChatRequest) -> ChatResult:
        try:
            message = self.client().messages.create(**self._params(request))
        except Exception as error:
            raise self._error(error) from error
        text = "".join(getattr(block, "text", "") for block in message.content if block.type == "text")
        return ChatResult(content=text, model=message.model or request.model or "", provider=self.name,
                          usage=_usage(message.usage), finish_reason=finish_reason(message.stop_reason))

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        try:
            events = self.client().messages.create(**self._params(request), stream=True)
        except Exception as error:
            raise self._error(error) from error
        prompt_tokens = completion_tokens = 0
        reason: str | None = None
        parts: list[str] = []
        counted = False
        try:
            for event in events:
                kind = event.type
                if kind == "message_start":
                    usage = _usage(event.message.usage)
                    prompt_tokens, completion_tokens, counted = usage.prompt_tokens, usage.completion_tokens, True
                elif kind == "content_block_delta" and getattr(event.delta, "type", "") == "text_delta":
                    if event.delta.text:
                        parts.append(event.delta.text)
                        yield StreamChunk(delta=event.delta.text)
                elif kind == "message_delta":
                    reason = event.delta.stop_reason or reason
                    if event.usage is not None:
                        # Cumulative totals: the last message_delta has the final output count.
                        completion_tokens = event.usage.output_tokens or completion_tokens
                        prompt_tokens = max(prompt_tokens, _usage(event.usage).prompt_tokens)
                elif kind == "message_stop":
                    break
        except ProviderError:
            raise
        except Exception as error:
            raise self._error(error) from error
        finally:
            events.close()
        if not counted:
            usage = self.estimate_usage(request, "".join(parts))
        else:
            usage = Usage(prompt_tokens, completion_tokens)
        yield StreamChunk(finish_reason=finish_reason(reason), usage=usage)

    def close(self) -> None:
        if self._client is not None and self._pid == current_pid():
            self._client.close()
        self._client = None


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    # Cached prompt tokens are still prompt tokens for accounting.
    prompt = sum(int(getattr(usage, name, 0) or 0)
                 for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    return Usage(prompt, int(getattr(usage, "output_tokens", 0) or 0))


def _message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(error, "message", "") or error)
