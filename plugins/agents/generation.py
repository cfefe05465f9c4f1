"""One model call, streamed, with its usage recorded for the caller (user and API key)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app import llm

log = logging.getLogger("lunaos.agents")


class Stopped(Exception):
    """The caller asked to stop (an execution was cancelled or ran out of time)."""


@dataclass
class Generation:
    text: str
    usage: llm.Usage
    provider: str
    model: str
    finish_reason: str


def add_usage(total: dict[str, Any], usage: llm.Usage) -> dict[str, Any]:
    prompt = int(total.get("prompt_tokens", 0)) + usage.prompt_tokens
    completion = int(total.get("completion_tokens", 0)) + usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def record(user_id: str | None, key_id: str | None, provider: str, model: str, usage: llm.Usage) -> None:
    """Record usage; a metering failure is logged, never allowed to hide the call's own outcome."""
    try:
        llm.record_usage(user_id=user_id, key_id=key_id, provider=provider, model=model, usage=usage)
    except Exception:
        log.exception("recording LLM usage failed (provider %s, model %s)", provider, model)


def _estimate(messages: list[llm.Message], text: str, model: str | None) -> llm.Usage:
    prompt = sum(llm.count_tokens(m.content, model) for m in messages)
    return llm.Usage(prompt_tokens=prompt, completion_tokens=llm.count_tokens(text, model), estimated=True)


def complete(messages: list[llm.Message], *, model: str | None, temperature: float, max_tokens: int,
             user_id: str | None, key_id: str | None, on_delta: Callable[[str], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> Generation:
    """Stream one completion, handing each delta to `on_delta`.

    Errors before the first token raise from `llm.stream` (LLMUnavailable, LLMUpstreamError,
    ModelNotFound); a failure later raises `llm.ProviderError`; `should_stop()` turning true
    raises `Stopped`. Usage is recorded in every case where tokens were spent.
    """
    request = llm.ChatRequest(messages=messages, model=model, temperature=temperature, max_tokens=max_tokens,
                              user=user_id)
    stream = llm.stream(request)
    parts: list[str] = []
    usage: llm.Usage | None = None
    finish = "stop"
    finished = False
    try:
        for chunk in stream:
            if chunk.delta:
                parts.append(chunk.delta)
                if on_delta is not None:
                    on_delta(chunk.delta)
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.finish_reason:
                finish = chunk.finish_reason
            if should_stop is not None and should_stop():
                raise Stopped()
        finished = True
    finally:
        if not finished:
            stream.close()
        text = "".join(parts)
        spent = usage or _estimate(messages, text, stream.model or model)
        record(user_id, key_id, stream.provider, stream.model or model or "", spent)
    return Generation(text=text, usage=spent, provider=stream.provider, model=stream.model or model or "",
                      finish_reason=finish)
