"""HTTP routes of flows: node/edge graphs validated as DAGs, versioned, run as executions."""
from flask.views import MethodView

from app import llm, retrieval
from app.http import Blueprint, PageArgs
from app.ratelimit import limit_group
from app.security import authenticated_principal, require

from . import flow_runner, flows, launch
from .api import AI_GROUP, SSE_DOC
from .flow_nodes import NODE_KINDS
from .run_schemas import (ExecutionSchema, FlowCreateSchema, FlowExecuteSchema, FlowListArgs, FlowSchema,
                          FlowUpdateSchema, FlowVersionSchema, NodeTypeSchema)

blp = Blueprint("agent_flows", __name__, url_prefix="/v1/agents/flows",
                description="Flows: graphs of input, llm, agent, rag_search, condition, human_input and output "
                            "nodes, versioned on every change of the graph; each run is pinned to one version.")

INVALID_GRAPH = ("Not a runnable graph: unknown node type, dangling or duplicate edge, cycle, not exactly one input, "
                 "no output, unreachable node, missing node config, on_error 'branch' without an 'error' edge or an "
                 "'error' edge from a node without it. `details.fields` says where, `details.nodes` names the nodes.")


@blp.route("")
class Flows(MethodView):
    @require("agents:write")
    @blp.arguments(FlowCreateSchema)
    @blp.response(201, FlowSchema)
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY", description=INVALID_GRAPH)
    def post(self, body):
        """Create a flow (version 1)"""
        return flows.create(authenticated_principal().user_id, body)

    @require("agents:read")
    @blp.arguments(FlowListArgs, location="query")
    @blp.paginated(FlowSchema)
    def get(self, args):
        """Your flows, newest first"""
        return flows.list_flows(authenticated_principal().user_id, **args)


@blp.route("/node-types")
class NodeTypes(MethodView):
    @require("agents:read")
    @blp.response(200, NodeTypeSchema(many=True))
    def get(self):
        """The node types this server runs, and whether each is usable now"""
        unavailable = set() if retrieval.available() else {"rag_search"}
        return [{"type": name, "description": kind.description, "available": name not in unavailable}
                for name, kind in sorted(NODE_KINDS.items())]


@blp.route("/<flow_id>")
class FlowItem(MethodView):
    @require("agents:read")
    @blp.response(200, FlowSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, flow_id):
        """One flow, with its current graph"""
        return flows.owned(authenticated_principal().user_id, flow_id)

    @require("agents:write")
    @blp.arguments(FlowUpdateSchema)
    @blp.response(200, FlowSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY", description=INVALID_GRAPH)
    def patch(self, body, flow_id):
        """Change a flow; a changed graph is validated and becomes a new version"""
        return flows.update(authenticated_principal().user_id, flow_id, body)

    @require("agents:write")
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, flow_id):
        """Delete a flow and its versions"""
        flows.delete(authenticated_principal().user_id, flow_id)


@blp.route("/<flow_id>/versions")
class FlowVersions(MethodView):
    @require("agents:read")
    @blp.arguments(PageArgs, location="query")
    @blp.paginated(FlowVersionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, flow_id):
        """Every saved version of a flow's graph, newest first"""
        return flows.versions(authenticated_principal().user_id, flow_id, **args)


@blp.route("/<flow_id>/execute")
class FlowExecute(MethodView):
    @require("agents:write")
    @limit_group(AI_GROUP)
    @blp.arguments(FlowExecuteSchema)
    @blp.response(200, ExecutionSchema, description="`stream: false`: the finished execution, or the one "
                  "waiting for input (status waiting_input). With `stream: true`: server-sent events `start`, then "
                  "per node `step` {index, node_id, type, status: started | finished | skipped | failed | retrying "
                  "| waiting, output, error, attempts}, `token` {delta, step, node_id} from model nodes, then "
                  "`done` {output, usage}, `error` {code, message} or `waiting_input` {node_id, prompt, pause}. "
                  "Independent branches run at the same time (AGENTS_FLOW_CONCURRENCY): events of different "
                  "nodes may interleave; each names its node.")
    @blp.doc(responses={200: SSE_DOC})
    @blp.alt_response(202, schema=ExecutionSchema, description="`stream: false`: still running; follow it by id.")
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body, flow_id):
        """Run a flow (its latest version unless one is named) as a job"""
        principal = authenticated_principal()
        flow = flows.owned(principal.user_id, flow_id)
        version = flows.version_of(flow, body["version"])
        if any(node["type"] in ("llm", "agent") for node in version.nodes) and not llm.available():
            raise llm.LLMUnavailable()
        order = flows.validate(principal.user_id, version.nodes, version.edges)  # agents may have gone since
        options = {k: body[k] for k in ("model", "temperature", "max_tokens") if body[k] is not None}
        return launch.start(principal, stream=body["stream"], kind="flow", target_id=flow.id, target_name=flow.name,
                            flow_version=version.version, input=body["input"], context=body["context"],
                            options=options, steps=flow_runner.step_records(version.nodes, order))
