"""HTTP routes of agents: the catalog, your agents, messages and conversations, one-off executions."""
from flask import current_app
from flask.views import MethodView

from app.http import Blueprint, PageArgs
from app.ratelimit import limit_group
from app.security import authenticated_principal, require

from . import conversations, launch, prompting, service
from .run_schemas import ExecuteSchema, ExecutionSchema
from .schemas import (AgentCreateSchema, AgentListArgs, AgentSchema, AgentUpdateSchema, CatalogAgentDetailSchema,
                      CatalogAgentSchema, ConversationSchema, MessageCreateSchema, MessageResultSchema,
                      MessageSchema)

blp = Blueprint("agents", __name__, url_prefix="/v1/agents",
                description="Agents: the built-in catalog, your own agents, conversations and executions.")

AI_GROUP = "ai"  # the gateway's stricter budget for model calls, when the ai plugin defines it

SSE_DOC = {"content": {"text/event-stream": {"schema": {"type": "string"}}}}
EXECUTION_EVENTS = ("With `stream: true`, server-sent events: `start` {execution_id}, `token` {delta} (one or more), "
                    "then `done` {output, usage} or `error` {code, message}; event ids are the execution's "
                    "sequence numbers (resume with GET /v1/executions/{id}/events and Last-Event-ID). A failure "
                    "before any output is answered with the error envelope instead.")


@blp.route("/catalog")
class Catalog(MethodView):
    @require(auth=False)
    @blp.response(200, CatalogAgentSchema(many=True))
    def get(self):
        """The built-in agents, usable by slug wherever an agent is named"""
        return service.catalog()


@blp.route("/catalog/<slug>")
class CatalogItem(MethodView):
    @require(auth=False)
    @blp.response(200, CatalogAgentDetailSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, slug):
        """One built-in agent, with its system prompt"""
        return service.builtin(slug)


@blp.route("")
class Agents(MethodView):
    @require("agents:write")
    @blp.arguments(AgentCreateSchema)
    @blp.response(201, AgentSchema)
    def post(self, body):
        """Create an agent"""
        return service.create(authenticated_principal().user_id, body)

    @require("agents:read")
    @blp.arguments(AgentListArgs, location="query")
    @blp.paginated(AgentSchema)
    def get(self, args):
        """Your agents, newest first"""
        return service.list_agents(authenticated_principal().user_id, **args)


@blp.route("/<agent_id>")
class AgentItem(MethodView):
    @require("agents:read")
    @blp.response(200, AgentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, agent_id):
        """One of your agents (or a built-in one, by slug)"""
        return service.usable(authenticated_principal().user_id, agent_id)

    @require("agents:write")
    @blp.arguments(AgentUpdateSchema)
    @blp.response(200, AgentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def patch(self, body, agent_id):
        """Change an agent (only the fields given)"""
        return service.update(authenticated_principal().user_id, agent_id, body)

    @require("agents:write")
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, agent_id):
        """Delete an agent and its conversations"""
        service.delete(authenticated_principal().user_id, agent_id)


@blp.route("/<agent_id>/messages")
class Messages(MethodView):
    @require("agents:write")
    @limit_group(AI_GROUP)
    @blp.arguments(MessageCreateSchema)
    @blp.response(200, MessageResultSchema)
    @blp.doc(responses={200: SSE_DOC})
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body, agent_id):
        """Send a message; the conversation's history goes with it, trimmed to the model's context window"""
        principal = authenticated_principal()
        service.usable(principal.user_id, agent_id)  # an unknown agent is a 404 even with no model configured
        launch.require_model()
        turn = conversations.prepare(principal, agent_id, body)
        if body["stream"]:
            return conversations.reply_stream(turn)
        return conversations.reply(turn)


@blp.route("/<agent_id>/conversations")
class AgentConversations(MethodView):
    @require("agents:read")
    @blp.arguments(PageArgs, location="query")
    @blp.paginated(ConversationSchema)
    def get(self, args, agent_id):
        """Your conversations with an agent, most recently active first"""
        return conversations.list_for_agent(authenticated_principal().user_id, agent_id, **args)


@blp.route("/conversations/<conversation_id>")
class ConversationItem(MethodView):
    @require("agents:read")
    @blp.response(200, ConversationSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, conversation_id):
        """One conversation"""
        return conversations.get(authenticated_principal().user_id, conversation_id)

    @require("agents:write")
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, conversation_id):
        """Delete a conversation and its messages"""
        conversations.delete(authenticated_principal().user_id, conversation_id)


@blp.route("/conversations/<conversation_id>/messages")
class ConversationMessages(MethodView):
    @require("agents:read")
    @blp.arguments(PageArgs, location="query")
    @blp.paginated(MessageSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, conversation_id):
        """The messages of a conversation, oldest first"""
        return conversations.list_messages(authenticated_principal().user_id, conversation_id, **args)


@blp.route("/execute")
class Execute(MethodView):
    @require("agents:write")
    @limit_group(AI_GROUP)
    @blp.arguments(ExecuteSchema)
    @blp.response(200, ExecutionSchema, description="`stream: false`: the finished execution. " + EXECUTION_EVENTS)
    @blp.doc(responses={200: SSE_DOC})
    @blp.alt_response(202, schema=ExecutionSchema, description="`stream: false`: still running after "
                                                               "AGENTS_SYNC_WAIT_SECONDS; follow it by id.")
    def post(self, body):
        """Run an agent once, as a job (a dropped client does not stop it)"""
        principal = authenticated_principal()
        agent = service.usable_or_422(principal.user_id, body["agent"], "agent")
        launch.require_model()
        options = {name: body[name] for name in ("model", "temperature", "max_tokens") if body[name] is not None}
        settings = service.settings(agent, options, int(current_app.config["AGENTS_MAX_TOKENS"]))
        # Refused now, with the envelope, rather than failing in the job.
        prompting.fit(prompting.system_prompt(agent), [], prompting.with_context(body["input"], body["context"]),
                      model=settings["model"], max_tokens=settings["max_tokens"])
        return launch.start(principal, stream=body["stream"], kind="agent", target_id=agent.public_id,
                            target_name=agent.name, input=body["input"], context=body["context"], options=options)
