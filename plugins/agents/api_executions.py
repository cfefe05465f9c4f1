"""HTTP routes of executions: status, the event log as SSE (replay, then follow), node runs, resume, cancellation."""
import marshmallow as ma
from flask import request
from flask.views import MethodView

from app.http import Blueprint, PageArgs
from app.security import authenticated_principal, require

from . import executions
from .api import SSE_DOC
from .run_schemas import ExecutionListArgs, ExecutionSchema, NodeRunSchema, ResumeSchema

blp = Blueprint("executions", __name__, url_prefix="/v1/executions",
                description="Runs of agents, chains and flows: status, steps, output, usage and their events.")


class EventArgs(ma.Schema):
    after = ma.fields.Integer(load_default=None, validate=ma.validate.Range(min=0),
                              metadata={"description": "Replay events after this sequence number (like the "
                                                       "Last-Event-ID header, which wins when both are given)."})


@blp.route("")
class Executions(MethodView):
    @require("agents:read")
    @blp.arguments(ExecutionListArgs, location="query")
    @blp.paginated(ExecutionSchema)
    def get(self, args):
        """Your executions, newest first"""
        return executions.list_executions(authenticated_principal().user_id, **args)


@blp.route("/<execution_id>")
class ExecutionItem(MethodView):
    @require("agents:read")
    @blp.response(200, ExecutionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, execution_id):
        """Status, steps, output, usage and error of one execution"""
        return executions.owned(authenticated_principal().user_id, execution_id)


@blp.route("/<execution_id>/events")
class ExecutionEvents(MethodView):
    @require("agents:read")
    @blp.arguments(EventArgs, location="query")
    @blp.doc(responses={200: {
        "description": "Server-sent events: every stored event of the execution from the start (or after "
                       "`Last-Event-ID`), then live ones; the stream ends after `done` or `error`, and after "
                       "`waiting_input` {node_id, prompt, pause} while the flow waits for input. Reconnecting "
                       "with `Last-Event-ID` then waits (heartbeats) and follows the run once it is resumed "
                       "(`resumed` {node_id, pause}, then its further events). Event ids are the execution's "
                       "sequence numbers 1, 2, 3, ...", **SSE_DOC}})
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, execution_id):
        """Replay an execution's events, then follow it until it ends"""
        executions.owned(authenticated_principal().user_id, execution_id)
        last = request.headers.get("Last-Event-ID") or (str(args["after"]) if args["after"] is not None else "0")
        return executions.event_stream(execution_id, last_event_id=last)


@blp.route("/<execution_id>/cancel")
class ExecutionCancel(MethodView):
    @require("agents:write")
    @blp.response(200, ExecutionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="The execution has already finished.")
    def post(self, execution_id):
        """Cancel an execution: a queued or waiting_input one at once, a running one at its next token or step"""
        return executions.cancel(authenticated_principal().user_id, execution_id)


@blp.route("/<execution_id>/nodes")
class ExecutionNodes(MethodView):
    @require("agents:read")
    @blp.arguments(PageArgs, location="query")
    @blp.paginated(NodeRunSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, execution_id):
        """One record per flow node run: input and output (truncated), attempts, timing, tokens, error"""
        return executions.node_runs(authenticated_principal().user_id, execution_id, **args)


@blp.route("/<execution_id>/resume")
class ExecutionResume(MethodView):
    @require("agents:write")
    @blp.arguments(ResumeSchema)
    @blp.response(202, ExecutionSchema, description="Queued again: follow it with GET /v1/executions/{id}/events "
                  "(`Last-Event-ID` of the `waiting_input` event) or by polling.")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="NOT_WAITING: the execution is not waiting for input "
                      "(`details.status` says what it is).")
    def post(self, body, execution_id):
        """Give a flow waiting in a human_input node its input; the run continues without re-running earlier nodes"""
        return executions.resume(authenticated_principal().user_id, execution_id, body["input"])
