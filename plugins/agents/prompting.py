"""Building what the model sees: system prompts, templates, context blocks, history that fits the window."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from app import llm
from app.errors import ApiError

from .models import Agent

# {input}, {previous}, {context.KEY}, {nodes.NODE_ID}; any other brace is text (prompts often hold code).
PLACEHOLDER = re.compile(r"\{(input|previous|context\.[A-Za-z0-9_]{1,64}|nodes\.[A-Za-z0-9_-]{1,64})\}")
MESSAGE_OVERHEAD_TOKENS = 6  # chat templates add role markers around every message
REPLY_PRIMING_TOKENS = 8  # and open the answer ("<|im_start|>assistant\n" and the like)
MIN_COMPLETION_TOKENS = 16  # below this an answer is not worth asking for


class ContextTooLong(ApiError):
    status = 422
    code = "CONTEXT_LENGTH_EXCEEDED"
    message = "The input does not fit in the model's context window."


def system_prompt(agent: Agent) -> str:
    text = agent.system_prompt.strip()
    traits = [t for t in (agent.traits or []) if isinstance(t, str) and t.strip()]
    if traits:
        text += "\n\nYour personality traits: " + ", ".join(t.strip() for t in traits) + "."
    return text


def as_text(value: Any) -> str:
    """An input, context value or node output as prompt text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def render(template: str, *, input: Any = "", previous: Any = "", context: dict[str, Any] | None = None,
           nodes: dict[str, Any] | None = None) -> str:
    """Fill the known placeholders; unknown context keys or nodes become empty text."""
    context = context or {}
    nodes = nodes or {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "input":
            return as_text(input)
        if name == "previous":
            return as_text(previous)
        if name.startswith("context."):
            return as_text(context.get(name.removeprefix("context.")))
        return as_text(nodes.get(name.removeprefix("nodes.")))

    return PLACEHOLDER.sub(fill, template)


def with_context(text: str, context: dict[str, Any] | None) -> str:
    """The user's input followed by the caller's context, labelled so the model can tell them apart."""
    if not context:
        return text
    lines = [f"- {key}: {as_text(value)}" for key, value in context.items()]
    return f"{text}\n\nContext:\n" + "\n".join(lines)


def count(text: str, model: str | None) -> int:
    return llm.count_tokens(text, model) + MESSAGE_OVERHEAD_TOKENS


@dataclass
class Fitted:
    messages: list[llm.Message]
    max_tokens: int
    included: int  # history messages kept
    dropped: int  # older history messages left out
    prompt_tokens: int  # our estimate of the prompt size


def fit(system: str | None, history: list[tuple[str, str, int]], new_message: str, *, model: str | None,
        max_tokens: int) -> Fitted:
    """The system prompt, as much recent history as fits, and the new message.

    `history` is (role, content, tokens) oldest first. The system prompt and the
    new message are always kept; history is dropped oldest first; the answer's
    budget (`max_tokens`) shrinks only when nothing else can give.
    """
    window = llm.context_window(model)
    fixed = (count(system, model) if system else 0) + count(new_message, model) + REPLY_PRIMING_TOKENS
    room = window - fixed
    if room < min(max_tokens, MIN_COMPLETION_TOKENS):
        raise ContextTooLong(details={"prompt_tokens": fixed, "context_window": window})
    max_tokens = min(max_tokens, room)
    budget = window - max_tokens - fixed
    kept: list[tuple[str, str, int]] = []
    used = 0
    for role, content, tokens in reversed(history):
        cost = (tokens or llm.count_tokens(content, model)) + MESSAGE_OVERHEAD_TOKENS
        if used + cost > budget:
            break
        kept.append((role, content, cost))
        used += cost
    kept.reverse()
    while kept and kept[0][0] != "user":  # a window opening on an answer confuses the model
        used -= kept.pop(0)[2]
    messages = [llm.Message("system", system)] if system else []
    messages += [llm.Message(role, content) for role, content, _ in kept]
    messages.append(llm.Message("user", new_message))
    return Fitted(messages, max_tokens, len(kept), len(history) - len(kept), fixed + used)
