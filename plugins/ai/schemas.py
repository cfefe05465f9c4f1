"""Request and response shapes of the ai plugin: the LunaOS chat API and the OpenAI-compatible one.

The OpenAI shapes follow OpenAI's wire format field for field (they are served
without the envelope). Unknown OpenAI request parameters are accepted and
ignored, so clients written for OpenAI keep working; the ones that change the
result in ways the gateway cannot honour (`n` > 1, non-text content) are
refused with a 400 naming the parameter.
"""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import validate

MAX_MESSAGES = 500
MAX_CONTENT_CHARS = 200_000  # one message
MAX_TOTAL_CHARS = 1_000_000  # all messages of one request (about 250k tokens)
MAX_OUTPUT_TOKENS = 131_072
MAX_STOP_SEQUENCES = 4
MAX_MODEL_NAME = 200

CHAT_ROLES = ("system", "user", "assistant")
# OpenAI's roles; `developer` is the newer name of `system` and is mapped to it.
OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool")

_MODEL = ma.fields.String(validate=validate.Length(min=1, max=MAX_MODEL_NAME))


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ma.ValidationError("Must not be blank.")


def _check_total(messages: list[dict[str, Any]]) -> None:
    total = sum(len(m.get("content") or "") for m in messages)
    if total > MAX_TOTAL_CHARS:
        raise ma.ValidationError(f"The messages hold {total} characters; at most {MAX_TOTAL_CHARS} are allowed.",
                                 field_name="messages")


# --------------------------------------------------------------------------- LunaOS chat


class ChatMessageSchema(ma.Schema):
    role = ma.fields.String(required=True, validate=validate.OneOf(CHAT_ROLES))
    content = ma.fields.String(required=True, validate=[validate.Length(min=1, max=MAX_CONTENT_CHARS), _not_blank])


class ChatRequestSchema(ma.Schema):
    messages = ma.fields.List(ma.fields.Nested(ChatMessageSchema), required=True,
                              validate=validate.Length(min=1, max=MAX_MESSAGES))
    model = _MODEL
    provider = ma.fields.String(validate=validate.Length(min=1, max=100),
                                metadata={"description": "Name of a configured provider; default: the router picks."})
    temperature = ma.fields.Float(load_default=0.7, validate=validate.Range(min=0, max=2))
    max_tokens = ma.fields.Integer(load_default=2000, validate=validate.Range(min=1, max=MAX_OUTPUT_TOKENS))
    stream = ma.fields.Boolean(load_default=False, metadata={
        "description": "Answer with server-sent events: `token` `{delta}` for each piece of text, then `done` "
                       "(the same object as the JSON answer) or `error` `{code, message}`."})

    @ma.validates_schema
    def total_size(self, data: dict[str, Any], **kwargs: Any) -> None:
        _check_total(data.get("messages") or [])


class TokensUsedSchema(ma.Schema):
    prompt = ma.fields.Integer(required=True)
    completion = ma.fields.Integer(required=True)
    total = ma.fields.Integer(required=True)


class ChatResponseSchema(ma.Schema):
    response = ma.fields.String(required=True)
    model = ma.fields.String(required=True)
    provider = ma.fields.String(required=True)
    finish_reason = ma.fields.String(required=True, metadata={"example": "stop"})
    tokens_used = ma.fields.Nested(TokensUsedSchema, required=True)
    processing_time_ms = ma.fields.Integer(required=True)


class ChatEventSchema(ma.Schema):
    """Documentation of the `stream: true` answer (text/event-stream)."""
    event = ma.fields.String(required=True, validate=validate.OneOf(("token", "done", "error")))
    data = ma.fields.Dict(required=True, metadata={
        "description": "token: {delta}; done: the JSON answer's object; error: {code, message}."})


class ProviderStatusSchema(ma.Schema):
    name = ma.fields.String(required=True)
    kind = ma.fields.String(required=True)
    available = ma.fields.Boolean(required=True)
    models = ma.fields.List(ma.fields.String(), required=True)
    active_requests = ma.fields.Integer(required=True)
    avg_latency_ms = ma.fields.Float(required=True, allow_none=True)
    cooldown_until = ma.fields.String(required=True, allow_none=True)


class StatusSchema(ma.Schema):
    enabled = ma.fields.Boolean(required=True)
    strategy = ma.fields.String(required=True)
    providers = ma.fields.List(ma.fields.Nested(ProviderStatusSchema), required=True)


class UsageArgs(ma.Schema):
    days = ma.fields.Integer(load_default=30, validate=validate.Range(min=1, max=366))


class UsageRowSchema(ma.Schema):
    """One day's tokens for one model and key (`key_id` null: session tokens)."""
    day = ma.fields.String(required=True, metadata={"example": "2026-11-22"})
    provider = ma.fields.String(required=True)
    model = ma.fields.String(required=True)
    key_id = ma.fields.String(required=True, allow_none=True)
    requests = ma.fields.Integer(required=True)
    prompt_tokens = ma.fields.Integer(required=True)
    completion_tokens = ma.fields.Integer(required=True)
    total_tokens = ma.fields.Integer(required=True)


# --------------------------------------------------------------------------- OpenAI-compatible


class OpenAIContent(ma.fields.Field):
    """A message's `content`: a string, or a list of text parts (`[{"type": "text", "text": ...}]`),
    or null (an assistant turn). Loaded as one string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            text = value
        elif isinstance(value, list):
            pieces = []
            for part in value:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise ma.ValidationError("Each content part must be an object with a `type`.")
                if part["type"] not in ("text", "refusal"):
                    raise ma.ValidationError(f"Content parts of type {part['type']!r} are not supported; "
                                             "send text parts only.")
                piece = part.get(part["type"])
                if not isinstance(piece, str):
                    raise ma.ValidationError(f"A {part['type']!r} part needs a string `{part['type']}`.")
                pieces.append(piece)
            text = "".join(pieces)
        else:
            raise ma.ValidationError("Must be a string, an array of text parts, or null.")
        if len(text) > MAX_CONTENT_CHARS:
            raise ma.ValidationError(f"Longer than {MAX_CONTENT_CHARS} characters.")
        return text


class StopSequences(ma.fields.Field):
    """`stop`: a string or up to four strings; loaded as a list."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str] | None:
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
            raise ma.ValidationError("Must be a non-empty string or an array of non-empty strings.")
        if len(items) > MAX_STOP_SEQUENCES:
            raise ma.ValidationError(f"At most {MAX_STOP_SEQUENCES} stop sequences.")
        return items


class OpenAIMessageSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE  # name, tool_calls, tool_call_id...: accepted, not used

    role = ma.fields.String(required=True, validate=validate.OneOf(OPENAI_ROLES))
    content = OpenAIContent(load_default="", allow_none=True, metadata={"type": "string", "nullable": True})


class StreamOptionsSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    include_usage = ma.fields.Boolean(load_default=False)


class ChatCompletionRequestSchema(ma.Schema):
    """OpenAI's `POST /v1/chat/completions` body. Other OpenAI parameters are accepted and ignored."""

    class Meta:
        unknown = ma.EXCLUDE

    model = ma.fields.String(required=True, validate=validate.Length(min=1, max=MAX_MODEL_NAME))
    messages = ma.fields.List(ma.fields.Nested(OpenAIMessageSchema), required=True,
                              validate=validate.Length(min=1, max=MAX_MESSAGES))
    temperature = ma.fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0, max=2))
    top_p = ma.fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0, max=1))
    max_tokens = ma.fields.Integer(load_default=None, allow_none=True,
                                   validate=validate.Range(min=1, max=MAX_OUTPUT_TOKENS))
    max_completion_tokens = ma.fields.Integer(load_default=None, allow_none=True,
                                              validate=validate.Range(min=1, max=MAX_OUTPUT_TOKENS),
                                              metadata={"description": "Wins over `max_tokens` when both are set."})
    n = ma.fields.Integer(load_default=1, allow_none=True,
                          validate=validate.Range(min=1, max=1, error="Only n=1 is supported."))
    stop = StopSequences(load_default=None, allow_none=True, metadata={"type": "array", "items": {"type": "string"}})
    seed = ma.fields.Integer(load_default=None, allow_none=True)
    user = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=256))
    presence_penalty = ma.fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-2, max=2))
    frequency_penalty = ma.fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-2, max=2))
    stream = ma.fields.Boolean(load_default=False, allow_none=True)
    stream_options = ma.fields.Nested(StreamOptionsSchema, load_default=None, allow_none=True)

    @ma.validates_schema
    def consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("stream_options") is not None and not data.get("stream"):
            raise ma.ValidationError("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                     field_name="stream_options")
        _check_total(data.get("messages") or [])


class CompletionMessageSchema(ma.Schema):
    role = ma.fields.String(required=True, metadata={"example": "assistant"})
    content = ma.fields.String(required=True, allow_none=True)
    refusal = ma.fields.String(required=True, allow_none=True)


class CompletionChoiceSchema(ma.Schema):
    index = ma.fields.Integer(required=True)
    message = ma.fields.Nested(CompletionMessageSchema, required=True)
    logprobs = ma.fields.Raw(required=True, allow_none=True)
    finish_reason = ma.fields.String(required=True, metadata={"example": "stop"})


class CompletionUsageSchema(ma.Schema):
    prompt_tokens = ma.fields.Integer(required=True)
    completion_tokens = ma.fields.Integer(required=True)
    total_tokens = ma.fields.Integer(required=True)


class ChatCompletionSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "chatcmpl-01jd3x5r7m2k9c4n8q6v0w1y2z"})
    object = ma.fields.String(required=True, metadata={"example": "chat.completion"})
    created = ma.fields.Integer(required=True, metadata={"description": "Unix seconds."})
    model = ma.fields.String(required=True)
    choices = ma.fields.List(ma.fields.Nested(CompletionChoiceSchema), required=True)
    usage = ma.fields.Nested(CompletionUsageSchema, required=True)
    system_fingerprint = ma.fields.String(required=True, allow_none=True)


class ChunkDeltaSchema(ma.Schema):
    role = ma.fields.String(metadata={"description": "In the first chunk only."})
    content = ma.fields.String()


class ChunkChoiceSchema(ma.Schema):
    index = ma.fields.Integer(required=True)
    delta = ma.fields.Nested(ChunkDeltaSchema, required=True)
    logprobs = ma.fields.Raw(required=True, allow_none=True)
    finish_reason = ma.fields.String(required=True, allow_none=True)


class ChatCompletionChunkSchema(ma.Schema):
    """One `data:` line of a streamed answer; the stream ends with `data: [DONE]`."""
    id = ma.fields.String(required=True)
    object = ma.fields.String(required=True, metadata={"example": "chat.completion.chunk"})
    created = ma.fields.Integer(required=True)
    model = ma.fields.String(required=True)
    system_fingerprint = ma.fields.String(required=True, allow_none=True)
    choices = ma.fields.List(ma.fields.Nested(ChunkChoiceSchema), required=True)
    usage = ma.fields.Nested(CompletionUsageSchema, allow_none=True, metadata={
        "description": "With stream_options.include_usage: null on every chunk, then a last chunk with "
                       "`choices: []` and the usage."})


class ModelSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "smollm2"})
    object = ma.fields.String(required=True, metadata={"example": "model"})
    created = ma.fields.Integer(required=True, metadata={"description": "Unix seconds; 0 when unknown."})
    owned_by = ma.fields.String(required=True)


class ModelListSchema(ma.Schema):
    object = ma.fields.String(required=True, metadata={"example": "list"})
    data = ma.fields.List(ma.fields.Nested(ModelSchema), required=True)


class OpenAIErrorDetailSchema(ma.Schema):
    message = ma.fields.String(required=True)
    type = ma.fields.String(required=True, metadata={"example": "invalid_request_error"})
    param = ma.fields.String(required=True, allow_none=True)
    code = ma.fields.String(required=True, allow_none=True, metadata={"example": "model_not_found"})


class OpenAIErrorSchema(ma.Schema):
    error = ma.fields.Nested(OpenAIErrorDetailSchema, required=True)
