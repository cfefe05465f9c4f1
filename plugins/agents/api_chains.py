"""HTTP routes of chains: presets and your own linear pipelines, and running them."""
from flask.views import MethodView

from app.http import Blueprint, PageArgs
from app.ratelimit import limit_group
from app.security import authenticated_principal, require

from . import chains, launch
from .api import AI_GROUP, SSE_DOC
from .run_schemas import ChainCreateSchema, ChainExecuteSchema, ChainSchema, ChainUpdateSchema, ExecutionSchema

blp = Blueprint("chains", __name__, url_prefix="/v1/chains",
                description="Chains: steps run one after another, each fed the previous step's output.")


@blp.route("")
class Chains(MethodView):
    @require("agents:read")
    @blp.arguments(PageArgs, location="query")
    @blp.paginated(ChainSchema)
    def get(self, args):
        """The preset chains, then yours"""
        return chains.list_chains(authenticated_principal().user_id, **args)

    @require("agents:write")
    @blp.arguments(ChainCreateSchema)
    @blp.response(201, ChainSchema)
    def post(self, body):
        """Create a chain: steps naming an agent (id or slug) and/or a prompt with {input} and {previous}"""
        return chains.view(chains.create(authenticated_principal().user_id, body))


@blp.route("/<chain_id>")
class ChainItem(MethodView):
    @require("agents:read")
    @blp.response(200, ChainSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, chain_id):
        """One chain (yours, or a preset by slug)"""
        return chains.get(authenticated_principal().user_id, chain_id)

    @require("agents:write")
    @blp.arguments(ChainUpdateSchema)
    @blp.response(200, ChainSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def patch(self, body, chain_id):
        """Change a chain"""
        return chains.view(chains.update(authenticated_principal().user_id, chain_id, body))

    @require("agents:write")
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, chain_id):
        """Delete a chain"""
        chains.delete(authenticated_principal().user_id, chain_id)


@blp.route("/execute")
class ChainExecute(MethodView):
    @require("agents:write")
    @limit_group(AI_GROUP)
    @blp.arguments(ChainExecuteSchema)
    @blp.response(200, ExecutionSchema, description="`stream: false`: the finished execution. With `stream: "
                  "true`: server-sent events `start`, then per step `step` {index, status: started} ... `token` "
                  "{delta, step} ... `step` {index, status: finished, output, usage}, then `done` {output, usage} "
                  "or `error` {code, message}.")
    @blp.doc(responses={200: SSE_DOC})
    @blp.alt_response(202, schema=ExecutionSchema, description="`stream: false`: still running; follow it by id.")
    def post(self, body):
        """Run a chain (by id or preset slug, or inline steps) as a job"""
        principal = authenticated_principal()
        target_id, name, steps = chains.resolve(principal.user_id, body)
        launch.require_model()
        options = {k: body[k] for k in ("model", "temperature", "max_tokens") if body[k] is not None}
        return launch.start(principal, stream=body["stream"], kind="chain", target_id=target_id, target_name=name,
                            input=body["input"], context=body["context"], options=options,
                            steps=chains.step_records(steps))
