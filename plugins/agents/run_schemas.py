"""Request and response shapes of executions, chains and flows."""
import json

import marshmallow as ma
from marshmallow import validate

from app.http import PageArgs, Timestamp

from .executions import KINDS, STATUSES
from .flow_nodes import ON_ERROR
from .schemas import MAX_PROMPT, MAX_TEXT, ModelOptionsSchema, TokenUsageSchema

MAX_CHAIN_STEPS = 20
NODE_RUN_STATUSES = ("running", "waiting", "succeeded", "failed", "cancelled")
MAX_INPUT_BYTES = 200_000
FLOW_STATUSES = ("draft", "active", "archived")
_NODE_ID = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="Use 1-64 letters, digits, '-' or '_'.")
_STREAM_DOC = ("Server-sent events (default): `start` {execution_id}, `step` (chains and flows), `token` "
               "{delta}, then `done` {output, usage} or `error` {code, message} (a flow that reaches a human_input "
               "node: `waiting_input` {node_id, prompt, pause}, then the stream ends). false: wait and return the "
               "finished execution, or the one waiting for input (status waiting_input); 202 with the execution "
               "if it is still running after AGENTS_SYNC_WAIT_SECONDS.")


def _json_size(value: object) -> None:
    if len(json.dumps(value, default=str)) > MAX_INPUT_BYTES:
        raise ma.ValidationError(f"At most {MAX_INPUT_BYTES} bytes as JSON.")


def _text_or_object(value: object) -> None:
    if isinstance(value, str):
        if not 1 <= len(value) <= MAX_TEXT:
            raise ma.ValidationError(f"Text of 1 to {MAX_TEXT} characters.")
        return
    if not isinstance(value, dict):
        raise ma.ValidationError("Text or a JSON object.")
    _json_size(value)


_CONTEXT = ma.fields.Dict(keys=ma.fields.String(validate=validate.Length(min=1, max=64)), load_default=dict,
                          validate=_json_size,
                          metadata={"description": "Extra facts for the run, shown to the model and available "
                                                   "to templates as {context.KEY}."})


class ExecuteSchema(ModelOptionsSchema):
    agent = ma.fields.String(required=True, validate=validate.Length(min=1, max=64),
                             metadata={"description": "One of your agent ids or a catalog slug.",
                                       "example": "code-reviewer"})
    input = ma.fields.String(required=True, validate=validate.Length(min=1, max=MAX_TEXT))
    context = _CONTEXT
    stream = ma.fields.Boolean(load_default=True, metadata={"description": _STREAM_DOC})


class WaitingSchema(ma.Schema):
    node_id = ma.fields.String(required=True)
    prompt = ma.fields.String(required=True, metadata={"description": "The node's config.prompt, filled in."})


class ExecutionSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "exe_01hx0c7k3m5r8v2w4y6z8a0b1c"})
    kind = ma.fields.String(required=True, validate=validate.OneOf(KINDS))
    target_id = ma.fields.String(required=True, metadata={"description": "The agent, chain or flow that ran."})
    target_name = ma.fields.String(required=True)
    flow_version = ma.fields.Integer(required=True, allow_none=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(STATUSES),
                              metadata={"description": "queued, running, waiting_input (a flow paused in a "
                                                       "human_input node, see `waiting`), then succeeded, failed, "
                                                       "cancelled or timed_out."})
    input = ma.fields.Raw(required=True)
    context = ma.fields.Dict(required=True)
    output = ma.fields.String(required=True, allow_none=True)
    error = ma.fields.Dict(required=True, allow_none=True, metadata={"description": "{code, message, ...}"})
    usage = ma.fields.Nested(TokenUsageSchema, required=True, attribute="usage_totals")
    waiting = ma.fields.Nested(WaitingSchema, required=True, allow_none=True,
                               metadata={"description": "Status waiting_input: the human_input node that waits "
                                                        "and its prompt; resume with POST "
                                                        "/v1/executions/{id}/resume. Otherwise null."})
    steps = ma.fields.List(ma.fields.Dict(), required=True,
                           metadata={"description": "One record per chain step or flow node: status, output "
                                                    "(truncated), usage, error, timing."})
    model = ma.fields.String(required=True, allow_none=True)
    provider = ma.fields.String(required=True, allow_none=True)
    last_event_id = ma.fields.Integer(required=True, attribute="last_seq",
                                      metadata={"description": "Sequence number of the newest event."})
    created_at = Timestamp(required=True)
    started_at = Timestamp(required=True, allow_none=True)
    finished_at = Timestamp(required=True, allow_none=True)


class ResumeSchema(ma.Schema):
    input = ma.fields.Raw(required=True, validate=_text_or_object,
                          metadata={"description": "What the person answers: text, or an object (the human_input "
                                                   "node's config.field, else its `message`, is used). It becomes "
                                                   "the node's output.", "example": "Approved, ship it."})


class NodeRunSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "nrn_01hx0c7k3m5r8v2w4y6z8a0b1c"})
    node_id = ma.fields.String(required=True)
    type = ma.fields.String(required=True, attribute="node_type")
    index = ma.fields.Integer(required=True, metadata={"description": "The node's position in the flow's "
                                                                      "topological order (as in `steps`)."})
    status = ma.fields.String(required=True, validate=validate.OneOf(NODE_RUN_STATUSES),
                              metadata={"description": "failed with on_error continue or branch: the run went "
                                                       "on; waiting: a human_input node waiting for its input."})
    attempts = ma.fields.Integer(required=True, metadata={"description": "1 + the retries made."})
    input = ma.fields.String(required=True, allow_none=True,
                             metadata={"description": "What the node got ({previous}), truncated."})
    output = ma.fields.String(required=True, allow_none=True, metadata={"description": "Truncated."})
    error = ma.fields.String(required=True, allow_none=True, metadata={"description": "CODE: message of the "
                                                                                      "last failed attempt."})
    usage = ma.fields.Nested(TokenUsageSchema, required=True, attribute="usage_totals")
    started_at = Timestamp(required=True)
    finished_at = Timestamp(required=True, allow_none=True)
    duration_ms = ma.fields.Integer(required=True, allow_none=True,
                                    metadata={"description": "All attempts and backoff; for a human_input node "
                                                             "the time spent waiting."})


class ExecutionListArgs(PageArgs):
    kind = ma.fields.String(load_default=None, validate=validate.OneOf(KINDS))
    status = ma.fields.String(load_default=None, validate=validate.OneOf(STATUSES))


# --- chains -----------------------------------------------------------------------------------

class ChainStepSchema(ModelOptionsSchema):
    name = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=100))
    agent = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64),
                             metadata={"description": "An agent id or catalog slug."})
    prompt = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=MAX_PROMPT),
                              metadata={"description": "Template with {input} (the chain's input) and {previous} "
                                                       "(the previous step's output).",
                                        "example": "Summarise for a changelog:\n\n{previous}"})


_STEPS = ma.fields.List(ma.fields.Nested(ChainStepSchema), validate=validate.Length(min=1, max=MAX_CHAIN_STEPS))


class ChainCreateSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=validate.Length(min=1, max=100))
    description = ma.fields.String(load_default="", validate=validate.Length(max=1000))
    steps = ma.fields.List(ma.fields.Nested(ChainStepSchema), required=True,
                           validate=validate.Length(min=1, max=MAX_CHAIN_STEPS))


class ChainUpdateSchema(ma.Schema):
    name = ma.fields.String(validate=validate.Length(min=1, max=100))
    description = ma.fields.String(validate=validate.Length(max=1000))
    steps = _STEPS


class ChainSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"description": "`chn_...`, or the slug of a preset."})
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True)
    preset = ma.fields.Boolean(required=True)
    steps = ma.fields.List(ma.fields.Nested(ChainStepSchema), required=True)
    created_at = Timestamp(required=True, allow_none=True)
    updated_at = Timestamp(required=True, allow_none=True)


class ChainExecuteSchema(ModelOptionsSchema):
    chain = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64),
                             metadata={"description": "A chain id or preset slug (or give `steps`).",
                                       "example": "review-test-document"})
    steps = ma.fields.List(ma.fields.Nested(ChainStepSchema), load_default=None, allow_none=True,
                           validate=validate.Length(min=1, max=MAX_CHAIN_STEPS),
                           metadata={"description": "Inline steps, instead of a stored chain."})
    input = ma.fields.String(required=True, validate=validate.Length(min=1, max=MAX_TEXT))
    context = _CONTEXT
    stream = ma.fields.Boolean(load_default=True, metadata={"description": _STREAM_DOC})


# --- flows ------------------------------------------------------------------------------------

class NodeSchema(ma.Schema):
    id = ma.fields.String(required=True, validate=_NODE_ID)
    type = ma.fields.String(required=True, validate=validate.Length(min=1, max=40),
                            metadata={"description": "input, llm, agent, rag_search, condition, output, "
                                                     "human_input (see GET /v1/agents/flows/node-types)."})
    name = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    config = ma.fields.Dict(keys=ma.fields.String(), load_default=dict)
    position = ma.fields.Dict(load_default=None, allow_none=True, metadata={"description": "Editor layout, kept."})
    max_retries = ma.fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0, max=5),
                                    metadata={"description": "Retries of transient failures (model or search "
                                                             "upstream, NODE_TIMEOUT) of llm, agent and rag_search "
                                                             "nodes."})
    backoff = ma.fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0, max=30),
                              metadata={"description": "Seconds before the first retry (default 0.5); doubled for "
                                                       "each further one, at most 30."})
    timeout = ma.fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0.05, max=3600),
                              metadata={"description": "Seconds one attempt may take; past it the attempt fails "
                                                       "with NODE_TIMEOUT (retried as a transient failure, then "
                                                       "on_error applies)."})
    on_error = ma.fields.String(load_default=None, allow_none=True, validate=validate.OneOf(ON_ERROR),
                                metadata={"description": "fail (default): the run fails; continue: `default` "
                                                         "stands in for the output; branch: the error message is "
                                                         "the output and the run follows this node's edges "
                                                         "labelled `error` (it needs one) instead of the others."})
    default = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=MAX_TEXT))


class EdgeSchema(ma.Schema):
    id = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    source = ma.fields.String(required=True, validate=validate.Length(min=1, max=64))
    target = ma.fields.String(required=True, validate=validate.Length(min=1, max=64))
    label = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40),
                             metadata={"description": "'true' or 'false' on edges leaving a condition node; "
                                                      "'error' on edges followed when their source (on_error "
                                                      "'branch') fails."})

    @ma.post_load
    def drop_nulls(self, data: dict, **kwargs: object) -> dict:
        return {k: v for k, v in data.items() if v is not None}


_NODES = ma.fields.List(ma.fields.Nested(NodeSchema), validate=validate.Length(min=1, max=500))
_EDGES = ma.fields.List(ma.fields.Nested(EdgeSchema), validate=validate.Length(max=2000))


class FlowUpdateSchema(ma.Schema):
    name = ma.fields.String(validate=validate.Length(min=1, max=100))
    description = ma.fields.String(validate=validate.Length(max=1000))
    status = ma.fields.String(validate=validate.OneOf(FLOW_STATUSES))
    nodes = _NODES
    edges = _EDGES
    metadata = ma.fields.Dict(validate=_json_size)


class FlowCreateSchema(FlowUpdateSchema):
    name = ma.fields.String(required=True, validate=validate.Length(min=1, max=100))
    description = ma.fields.String(load_default="", validate=validate.Length(max=1000))
    status = ma.fields.String(load_default="active", validate=validate.OneOf(FLOW_STATUSES))
    nodes = ma.fields.List(ma.fields.Nested(NodeSchema), required=True, validate=validate.Length(min=1, max=500))
    edges = ma.fields.List(ma.fields.Nested(EdgeSchema), load_default=list, validate=validate.Length(max=2000))
    metadata = ma.fields.Dict(load_default=dict, validate=_json_size)


class FlowSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "flw_01hx0c7k3m5r8v2w4y6z8a0b1c"})
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(FLOW_STATUSES))
    version = ma.fields.Integer(required=True, metadata={"description": "Bumped by every change of the graph."})
    nodes = ma.fields.List(ma.fields.Dict(), required=True)
    edges = ma.fields.List(ma.fields.Dict(), required=True)
    metadata = ma.fields.Dict(required=True, attribute="meta")
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class FlowVersionSchema(ma.Schema):
    version = ma.fields.Integer(required=True)
    nodes = ma.fields.List(ma.fields.Dict(), required=True)
    edges = ma.fields.List(ma.fields.Dict(), required=True)
    created_at = Timestamp(required=True)


class FlowListArgs(PageArgs):
    search = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=100))
    status = ma.fields.String(load_default=None, validate=validate.OneOf(FLOW_STATUSES))


class FlowExecuteSchema(ModelOptionsSchema):
    input = ma.fields.Raw(required=True, validate=_text_or_object,
                          metadata={"description": "Text, or an object (the input node's config.field, else its "
                                                   "`message`, is used).", "example": {"message": "Hello"}})
    context = _CONTEXT
    version = ma.fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1),
                                metadata={"description": "Run this version of the graph (default: the latest)."})
    stream = ma.fields.Boolean(load_default=True, metadata={"description": _STREAM_DOC})


class NodeTypeSchema(ma.Schema):
    type = ma.fields.String(required=True)
    description = ma.fields.String(required=True)
    available = ma.fields.Boolean(required=True)
