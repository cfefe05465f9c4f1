"""The gateway's logic: build provider requests, run chats, keep usage books.

Views hand in plain values and a `Caller`; nothing here reads the Flask request.
Every chat records its token usage for the caller's user and key exactly once:
a finished chat as upstream reported it, a stream when it ends, including a
stream cut short by the client or by a provider failure, which is charged for
what was generated (counted with the provider's tokenizer).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask

from app import llm
from app.llm import Attempt, ChatRequest, ChatResult, Message, Usage
from app.ratelimit import parse_many
from app.security import Principal

log = logging.getLogger("lunaos.ai")
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
FREE_TIERS = (None, "free")


@dataclass(frozen=True)
class Caller:
    """Whose budget and books a chat goes to."""
    user_id: str | None
    key_id: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Caller:
        return cls(user_id=principal.user_id, key_id=principal.key_id)


def build_request(messages: Iterable[dict[str, Any]], *, model: str | None = None, temperature: float | None = None,
                  max_tokens: int | None = None, top_p: float | None = None, stop: list[str] | None = None,
                  seed: int | None = None, user: str | None = None) -> ChatRequest:
    request = ChatRequest(
        messages=[Message(ROLE_ALIASES.get(m["role"], m["role"]), m.get("content") or "") for m in messages],
        model=model, max_tokens=max_tokens, top_p=top_p, stop=stop, seed=seed, user=user,
    )
    if temperature is not None:
        request.temperature = temperature
    return request


def record(caller: Caller, provider: str, model: str, usage: Usage) -> None:
    """Book the tokens; a bookkeeping failure is logged, never turned into a failed chat
    (the tokens are spent either way, and the answer is what the caller paid for)."""
    try:
        llm.record_usage(user_id=caller.user_id, key_id=caller.key_id, provider=provider, model=model, usage=usage)
    except Exception:
        log.exception("recording AI usage failed", extra={"user_id": caller.user_id, "provider": provider,
                                                          "model": model, "tokens": usage.total_tokens})


def complete(caller: Caller, request: ChatRequest, provider: str | None = None) -> ChatResult:
    """One non-streamed chat, booked."""
    started = time.perf_counter()
    result = llm.chat(request, provider=provider)
    if not result.latency_ms:
        result.latency_ms = (time.perf_counter() - started) * 1000
    record(caller, result.provider, result.model, result.usage)
    return result


def tokens_used(usage: Usage) -> dict[str, int]:
    return {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens, "total": usage.total_tokens}


def chat_answer(result: ChatResult) -> dict[str, Any]:
    """The LunaOS `POST /v1/ai/chat` answer."""
    return {"response": result.content, "model": result.model, "provider": result.provider,
            "finish_reason": result.finish_reason, "tokens_used": tokens_used(result.usage),
            "processing_time_ms": round(result.latency_ms)}


def estimate_usage(request: ChatRequest, completion: str, model: str | None) -> Usage:
    prompt = sum(llm.count_tokens(m.content, model) for m in request.messages)
    return Usage(prompt_tokens=prompt, completion_tokens=llm.count_tokens(completion, model) if completion else 0,
                 estimated=True)


class Generation:
    """One streamed chat: the provider's stream, the text so far, and its books.

    Creating it starts the stream: errors before the first token (no provider,
    unknown model, every provider down) raise here, while the view can still
    answer with an error status. `deltas()` yields the text; `close()` ends it
    however it went and books the usage, once.
    """

    def __init__(self, caller: Caller, request: ChatRequest, provider: str | None = None):
        self.caller = caller
        self.request = request
        self.started = time.perf_counter()
        self.stream = llm.stream(request, provider=provider)
        self.pieces: list[str] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.completed = False  # upstream sent its final chunk
        self.closed = False

    @property
    def provider(self) -> str:
        return self.stream.provider

    @property
    def model(self) -> str:
        return self.stream.model or self.request.model or ""

    @property
    def attempts(self) -> list[Attempt]:
        return list(self.stream.attempts)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)

    def deltas(self) -> Iterator[str]:
        """The generated text piece by piece; a provider failure mid-stream raises `ProviderError`."""
        for chunk in self.stream:
            if chunk.delta:
                self.pieces.append(chunk.delta)
                yield chunk.delta
            if chunk.usage is not None:
                self.usage = chunk.usage
            if chunk.finish_reason is not None:
                self.finish_reason = chunk.finish_reason
                self.completed = True
        self.completed = True

    def close(self) -> Usage:
        """Stop the upstream stream if it is still running and book what was used (idempotent)."""
        if self.closed:
            return self.usage or Usage()
        self.closed = True
        try:
            self.stream.close()
        except Exception:  # closing an already failed connection: nothing left to release
            log.debug("closing the provider stream failed", exc_info=True)
        if self.usage is None or not self.completed:
            # Cut short: upstream never reported usage for what it did generate.
            self.usage = estimate_usage(self.request, self.text, self.model)
        record(self.caller, self.provider, self.model, self.usage)
        return self.usage

    def answer(self) -> dict[str, Any]:
        """The `done` event's data: the same object as the non-streamed answer."""
        usage = self.usage or Usage()
        return {"response": self.text, "model": self.model, "provider": self.provider,
                "finish_reason": self.finish_reason or "stop", "tokens_used": tokens_used(usage),
                "processing_time_ms": self.elapsed_ms}


def llm_headers(provider: str | None, attempts: list[Attempt] | None) -> dict[str, str]:
    """`X-LLM-Provider` (who answered) and `X-LLM-Attempts` (every provider tried, in order)."""
    headers = {}
    if provider:
        headers["X-LLM-Provider"] = provider
    if attempts:
        headers["X-LLM-Attempts"] = llm.attempts_header(attempts)
    return headers


def error_headers(error: Exception) -> dict[str, str]:
    """The X-LLM-* headers of a failed chat: the router lists what it tried in `details.attempts`."""
    details = getattr(error, "details", None) or {}
    tried = details.get("attempts") if isinstance(details, dict) else None
    if not tried:
        return {}
    try:
        attempts = [Attempt(**entry) for entry in tried]
    except TypeError:
        return {}
    return llm_headers(None, attempts)


def status() -> dict[str, Any]:
    return llm.status()


def models() -> list[dict[str, Any]]:
    return llm.models()


def find_model(model_id: str) -> dict[str, Any] | None:
    return next((m for m in llm.models() if m["id"] == model_id), None)


def usage(caller: Caller, days: int) -> list[dict[str, Any]]:
    """The caller's daily token usage; an API key sees only its own rows."""
    rows = llm.usage_for(caller.user_id or "", days=days)
    if caller.key_id is not None:
        rows = [row for row in rows if row.get("key_id") == caller.key_id]
    return rows


# --------------------------------------------------------------------------- rate limits


def ai_limit(app: Flask):  # type: ignore[no-untyped-def]
    """The `ai` limit group: RATELIMIT_AI_FREE for free-tier callers, on top of their tier limit.

    Applied by the account's tier, so a key with its own (larger) `rate_limit` does
    not lift a free account's AI budget. An empty RATELIMIT_AI_FREE turns it off."""
    value = (app.config.get("RATELIMIT_AI_FREE") or "").strip()
    if value:
        try:
            parse_many(value)
        except ValueError as error:
            from app.config import ConfigError

            raise ConfigError(f"LUNAOS_RATELIMIT_AI_FREE: not a rate limit ({error}); "
                              "use e.g. '100/hour' or '10/minute;100/hour'") from None

    def provider(principal: Principal) -> str | None:
        if not value or not principal.authenticated:
            return None
        return value if principal.tier in FREE_TIERS else None

    return provider
