"""The provider layer every plugin uses: provider kinds, configured instances and the router.

Public API (plugins import only this module):

    from app import llm
    result = llm.chat(llm.ChatRequest(messages=[llm.Message("user", "hi")]))
    stream = llm.stream(request)          # first chunk already pulled: errors raise here
    for chunk in stream: ...              # deltas, then one chunk with finish_reason and usage
    llm.record_usage(user_id=..., key_id=..., provider=stream.provider, model=stream.model, usage=stream.usage)

Configuration: LLM_PROVIDERS (see app/llm/config.py), LLM_STRATEGY, LLM_TIMEOUT,
LLM_RETRIES, LLM_FAILURE_THRESHOLD, LLM_COOLDOWN_SECONDS, LLM_OFFLINE, OPENAI_API_KEY.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app

from .. import health, invalidation, redis_client
from ..config import ConfigError
from ..errors import ValidationFailed
from . import config as llm_config
from . import tokens
from .base import Provider
from .cli import llm_cli
from .models import LlmUsage
from .registry import ENTRY_POINT_GROUP, known_kinds, register_kind, resolve, unregister_kind
from .router import ChatStream, LLMRequestRejected, Router
from .state import RedisState, SharedState
from .types import (ROLES, Attempt, ChatRequest, ChatResult, LLMUnavailable, LLMUpstreamError, Message, ModelNotFound,
                    ProviderError, StreamChunk, Usage)
from .usage import flush as flush_usage
from .usage import record as _record
from .usage import usage_for

__all__ = ["ENTRY_POINT_GROUP", "ROLES", "Attempt", "ChatRequest", "ChatResult", "ChatStream", "LLMRequestRejected",
           "LLMUnavailable", "LLMUpstreamError", "LlmUsage", "Message", "ModelNotFound", "Provider", "ProviderError",
           "StreamChunk", "Usage", "attempts_header", "available", "chat", "context_window", "count_tokens",
           "flush_usage", "init_app", "known_kinds", "models", "record_usage", "register_kind", "router", "status",
           "stream", "unregister_kind", "usage_for"]

log = logging.getLogger("lunaos.llm")
EXTENSION = "lunaos.llm"


def _build(app: Flask) -> Router:
    settings = llm_config.load(app.config)
    providers: list[Provider] = []
    for index, entry in enumerate(settings.providers):
        cls = resolve(entry["type"])
        try:
            providers.append(cls(entry["name"], entry))
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError(f"invalid configuration:\n  {llm_config.VAR}[{index}] {entry['name']!r}: provider type "
                              f"{entry['type']!r} refused its settings: {type(error).__name__}: {error}") from error
    client = redis_client.client(app)
    shared = RedisState(client, redis_client.key("llm:", app)) if client is not None else None
    return Router(providers, settings, SharedState(shared, invalidation.get(app)))


def init_app(app: Flask) -> None:
    """Build the provider registry and router from LLM_PROVIDERS; a mistake stops start-up here."""
    old = app.extensions.get(EXTENSION)
    if old is not None:
        old.close()
    app.extensions[EXTENSION] = _build(app)
    health.register(app, "llm", lambda: _health(app))
    app.cli.add_command(llm_cli)


def router(app: Flask | None = None) -> Router:
    return (app or current_app).extensions[EXTENSION]


def available(app: Flask | None = None) -> bool:
    """At least one provider is configured (it may still be cooling down)."""
    return bool(router(app).providers)


def _check(request: ChatRequest) -> None:
    fields: dict[str, list[str]] = {}
    if not isinstance(request.messages, list) or not request.messages:
        fields["messages"] = ["At least one message is required."]
    else:
        for i, m in enumerate(request.messages):
            if not isinstance(m, Message) or m.role not in ROLES or not isinstance(m.content, str):
                fields[f"messages.{i}"] = [f"A message needs a role ({', '.join(ROLES)}) and text content."]
    if not isinstance(request.temperature, (int, float)) or not 0 <= request.temperature <= 2:
        fields["temperature"] = ["Must be between 0 and 2."]
    if request.max_tokens is not None and (not isinstance(request.max_tokens, int) or request.max_tokens < 1):
        fields["max_tokens"] = ["Must be a positive integer."]
    if request.top_p is not None and not 0 < request.top_p <= 1:
        fields["top_p"] = ["Must be greater than 0 and at most 1."]
    if fields:
        raise ValidationFailed(fields)


def chat(request: ChatRequest, *, provider: str | None = None) -> ChatResult:
    _check(request)
    return router().chat(request, provider)


def stream(request: ChatRequest, *, provider: str | None = None) -> ChatStream:
    _check(request)
    return router().stream(request, provider)


def status() -> dict[str, Any]:
    r = router()
    return {"enabled": bool(r.providers), "strategy": r.settings.strategy, "providers": r.status()}


def models() -> list[dict[str, Any]]:
    return [{"id": model, "provider": p.name, "owned_by": p.name} for p in router().providers
            for model in p.list_models()]


def record_usage(*, user_id: str | None, key_id: str | None, provider: str, model: str, usage: Usage) -> None:
    _record(user_id=user_id, key_id=key_id, provider=provider, model=model, usage=usage)


def _serving(model: str | None) -> Provider | None:
    providers = router().providers
    explicit = [p for p in providers if model and model in p.models]
    serving = explicit or [p for p in providers if p.serves(model)]
    return serving[0] if serving else None


def context_window(model: str | None) -> int:
    """Tokens the model takes (prompt and answer together)."""
    provider = _serving(model)
    if provider is not None and provider.settings.get("context_window"):
        return int(provider.settings["context_window"])
    known = tokens.known_window(model or (provider.models[0] if provider and provider.models else None))
    if known:
        return known
    return provider.context_window if provider is not None else tokens.DEFAULT_CONTEXT_WINDOW


def count_tokens(text: str, model: str | None = None) -> int:
    provider = _serving(model)
    return provider.count_tokens(text) if provider is not None else tokens.estimate(text)


def attempts_header(attempts: list[Attempt]) -> str:
    """`name;outcome=ok;dur=12.3, other;outcome=error;dur=5.0;error="HTTP 503"` (Server-Timing-like)."""
    parts = []
    for a in attempts:
        item = f"{a.provider};outcome={a.outcome};dur={a.duration_ms:.1f}"
        if a.error:
            clean = "".join(ch for ch in a.error if ch.isprintable() and ch not in '"\\')[:80]
            item += f';error="{clean}"'
        parts.append(item)
    return ", ".join(parts)


def _health(app: Flask) -> dict[str, Any]:
    r = router(app)
    if not r.providers:
        return {"status": "not configured", "detail": "no provider: set LUNAOS_LLM_PROVIDERS"}
    names = [p.name for p in r.providers]
    cooling = r.state.cooldowns(names)
    down = [n for n in names if cooling[n]]
    up = len(names) - len(down)
    if not up:
        return {"status": "degraded", "detail": f"all {len(names)} provider(s) cooling down after failures"}
    # Some cooling down is what failover is for: still ok, the detail says how many are left.
    return {"status": "ok", "detail": f"{up}/{len(names)} provider(s) available"}
