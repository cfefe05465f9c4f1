"""Request and response shapes of agents, the catalog, conversations and messages."""
import marshmallow as ma
from marshmallow import validate

from app.http import PageArgs, Timestamp

MAX_TEXT = 100_000  # characters of one input or message
MAX_PROMPT = 20_000  # characters of a system prompt or template

_TRAIT = ma.fields.String(validate=validate.Length(min=1, max=40))
_TOOL = ma.fields.String(validate=validate.Length(min=1, max=64))


class TokenUsageSchema(ma.Schema):
    prompt_tokens = ma.fields.Integer(required=True)
    completion_tokens = ma.fields.Integer(required=True)
    total_tokens = ma.fields.Integer(required=True)


class PersonalitySchema(ma.Schema):
    traits = ma.fields.List(_TRAIT, load_default=list, validate=validate.Length(max=20),
                            metadata={"example": ["helpful", "concise"]})


class ModelOptionsSchema(ma.Schema):
    """Per-request overrides of the agent's model settings."""

    model = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=200))
    temperature = ma.fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0, max=2))
    max_tokens = ma.fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=32_768),
                                   metadata={"description": "Most tokens the answer may have."})


class AgentUpdateSchema(ma.Schema):
    """Every field optional: only those given change."""

    name = ma.fields.String(validate=validate.Length(min=1, max=100))
    description = ma.fields.String(validate=validate.Length(max=1000))
    system_prompt = ma.fields.String(validate=validate.Length(min=1, max=MAX_PROMPT))
    personality = ma.fields.Nested(PersonalitySchema)
    model = ma.fields.String(allow_none=True, validate=validate.Length(min=1, max=200),
                             metadata={"description": "Model id; null: the provider's default."})
    temperature = ma.fields.Float(allow_none=True, validate=validate.Range(min=0, max=2))
    max_tokens = ma.fields.Integer(allow_none=True, validate=validate.Range(min=1, max=32_768))
    tools = ma.fields.List(_TOOL, validate=validate.Length(max=32),
                           metadata={"description": "Names of tools the agent is meant to use (kept for clients)."})


class AgentCreateSchema(AgentUpdateSchema):
    name = ma.fields.String(required=True, validate=validate.Length(min=1, max=100))
    system_prompt = ma.fields.String(required=True, validate=validate.Length(min=1, max=MAX_PROMPT))
    description = ma.fields.String(load_default="", validate=validate.Length(max=1000))
    personality = ma.fields.Nested(PersonalitySchema, load_default=lambda: {"traits": []})
    tools = ma.fields.List(_TOOL, load_default=list, validate=validate.Length(max=32))


class AgentSchema(ma.Schema):
    id = ma.fields.String(required=True, attribute="public_id",
                          metadata={"description": "`agt_...` for your agents, the slug for built-in ones."})
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True)
    system_prompt = ma.fields.String(required=True)
    personality = ma.fields.Nested(PersonalitySchema, required=True)
    model = ma.fields.String(required=True, allow_none=True)
    temperature = ma.fields.Float(required=True, allow_none=True)
    max_tokens = ma.fields.Integer(required=True, allow_none=True)
    tools = ma.fields.List(ma.fields.String(), required=True)
    builtin = ma.fields.Boolean(required=True)
    category = ma.fields.String(required=True, allow_none=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class CatalogAgentSchema(ma.Schema):
    id = ma.fields.String(required=True, attribute="slug", metadata={"example": "code-reviewer"})
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True)
    category = ma.fields.String(required=True)
    personality = ma.fields.Nested(PersonalitySchema, required=True)


class CatalogAgentDetailSchema(CatalogAgentSchema):
    system_prompt = ma.fields.String(required=True)
    temperature = ma.fields.Float(required=True, allow_none=True)
    max_tokens = ma.fields.Integer(required=True, allow_none=True)


class AgentListArgs(PageArgs):
    search = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=100),
                              metadata={"description": "Case-insensitive match on name and description."})


class MessageCreateSchema(ModelOptionsSchema):
    text = ma.fields.String(required=True, validate=validate.Length(min=1, max=MAX_TEXT))
    conversation_id = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=40),
                                       metadata={"description": "Continue this conversation; omit to start one."})
    stream = ma.fields.Boolean(load_default=False, metadata={
        "description": "Server-sent events: `start` {conversation_id}, `token` {delta}, then `done` with the "
                       "same fields as the JSON answer, or `error` {code, message}."})


class HistorySchema(ma.Schema):
    included = ma.fields.Integer(required=True, metadata={"description": "Earlier messages sent to the model."})
    dropped = ma.fields.Integer(required=True,
                                metadata={"description": "Older messages left out to fit the context window."})


class MessageResultSchema(ma.Schema):
    response = ma.fields.String(required=True)
    conversation_id = ma.fields.String(required=True)
    message_id = ma.fields.String(required=True)
    usage = ma.fields.Nested(TokenUsageSchema, required=True)
    model = ma.fields.String(required=True)
    provider = ma.fields.String(required=True)
    finish_reason = ma.fields.String(required=True)
    history = ma.fields.Nested(HistorySchema, required=True)


class ConversationSchema(ma.Schema):
    id = ma.fields.String(required=True)
    agent_id = ma.fields.String(required=True, attribute="agent_public_id",
                                metadata={"description": "The agent's id (or catalog slug)."})
    title = ma.fields.String(required=True)
    message_count = ma.fields.Integer(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class MessageSchema(ma.Schema):
    id = ma.fields.String(required=True)
    position = ma.fields.Integer(required=True)
    role = ma.fields.String(required=True, validate=validate.OneOf(("user", "assistant")))
    content = ma.fields.String(required=True)
    tokens = ma.fields.Integer(required=True)
    model = ma.fields.String(required=True, allow_none=True)
    usage = ma.fields.Nested(TokenUsageSchema, required=True, allow_none=True)
    finish_reason = ma.fields.String(required=True, allow_none=True)
    created_at = Timestamp(required=True)
