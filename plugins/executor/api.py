"""HTTP routes of the executor plugin."""
from flask import current_app, request
from flask.views import MethodView

from app.errors import ApiError
from app.http import Blueprint, Page, envelope_schema
from app.ids import new_id
from app.security import authenticated_principal, require

from . import runs, service
from .schemas import (EventArgs, PlanRequestSchema, PlanSchema, RunRequestSchema, RunResultSchema, RunSchema,
                      TaskDetailSchema, TaskListArgs, TaskSchema)

blp = Blueprint("executor", __name__, url_prefix="/v1/executor",
                description="Natural-language requests to risk-rated shell plans, run step by step in a sandbox.")
SSE_DOC = {"content": {"text/event-stream": {"schema": {"type": "string"}}}}
RUN_EVENTS = ("With `stream: true`, server-sent events: `start` {run_id, task_id, steps}, `step` {step_id, status: "
              "running} and {step_id, status, exit_code, error, ...} around each step, `output` {step_id, stream, "
              "lines}, then `done` {run_id, task_id, overall_status, results}. Event ids are the run's sequence "
              "numbers: resume with GET /v1/executor/runs/{run_id}/events and Last-Event-ID.")


class FeatureDisabled(ApiError):
    status, code = 403, "FEATURE_DISABLED"
    message = "The executor is disabled on this server (EXECUTOR_ENABLED=false)."


@blp.before_request
def _enabled() -> None:
    if not current_app.config["EXECUTOR_ENABLED"]:
        raise FeatureDisabled()


@blp.route("/plan")
class Plan(MethodView):
    @require("executor:run")
    @blp.arguments(PlanRequestSchema)
    @blp.response(200, PlanSchema)
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY", description="UNSUPPORTED_COMMAND (with "
                      "`details.suggestions`), COMMAND_BLOCKED for a blocked literal command, or invalid input.")
    def post(self, body):
        """Plan a request: steps rated safe / moderate / dangerous, stored so a run is checked against them"""
        task = service.create_plan(authenticated_principal(), body["command"], body["context"])
        return service.plan_view(task)


@blp.route("/run")
class Run(MethodView):
    @require("executor:run")
    @blp.arguments(RunRequestSchema)
    @blp.response(200, RunResultSchema, description="The finished run. " + RUN_EVENTS)
    @blp.doc(responses={200: SSE_DOC})
    @blp.alt_response(202, schema=envelope_schema(RunResultSchema),
                      description="`stream: false`: still running after EXECUTOR_SYNC_WAIT_SECONDS.")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="CONFIRMATION_REQUIRED (`details.steps`) or "
                                                            "TASK_RUNNING.")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY", description="COMMAND_BLOCKED: `details.step_id` and "
                                                                    "`details.reason`; nothing ran.")
    def post(self, body):
        """Run a plan's steps in order, stopping at the first failure (as a job: a dropped client stops nothing)"""
        principal = authenticated_principal()
        task = service.owned_task(principal.user_id, body["task_id"])
        steps = service.check_run(principal, task, body["steps"], body["confirm"])
        if body["stream"]:  # the stream replays stored events first: nothing is missed
            run = runs.create(principal, task, steps, body["confirm"])
            return runs.event_stream(run.id, last_event_id="0")
        run_id = new_id("run")
        broker, sub = runs.subscribe(run_id)  # before the job can start
        try:
            runs.create(principal, task, steps, body["confirm"], run_id=run_id)
            runs.wait_finished(run_id, sub, float(current_app.config["EXECUTOR_SYNC_WAIT_SECONDS"]))
        finally:
            broker.unsubscribe(sub)
        run = runs.owned(principal.user_id, run_id)
        return runs.result_view(run), 200 if run.status in runs.FINISHED else 202


@blp.route("/tasks")
class Tasks(MethodView):
    @require("executor:run")
    @blp.arguments(TaskListArgs, location="query")
    @blp.paginated(TaskSchema)
    def get(self, args):
        """Your tasks (plans and their latest status), newest first"""
        page = service.list_tasks(authenticated_principal().user_id, **args)
        return Page([service.task_view(t) for t in page.items], page.page, page.per_page, page.total)


@blp.route("/tasks/<task_id>")
class TaskItem(MethodView):
    @require("executor:run")
    @blp.response(200, TaskDetailSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, task_id):
        """One task: its plan and its most recent runs with their results"""
        return service.task_detail(authenticated_principal().user_id, task_id)


@blp.route("/tasks/<task_id>/cancel")
class TaskCancel(MethodView):
    @require("executor:run")
    @blp.response(200, RunSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="NOT_RUNNING: nothing of this task is running.")
    def post(self, task_id):
        """Stop the task's running run: a queued one at once, a running one's process group within a second"""
        return runs.run_view(runs.cancel(authenticated_principal().user_id, task_id))


@blp.route("/runs/<run_id>")
class RunItem(MethodView):
    @require("executor:run")
    @blp.response(200, RunSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, run_id):
        """One run: its steps as submitted (re-rated), status and results"""
        return runs.run_view(runs.owned(authenticated_principal().user_id, run_id))


@blp.route("/runs/<run_id>/events")
class RunEvents(MethodView):
    @require("executor:run")
    @blp.arguments(EventArgs, location="query")
    @blp.doc(responses={200: {"description": "Every stored event of the run from the start (or after "
                                             "`Last-Event-ID`), then live ones until `done`. " + RUN_EVENTS,
                              **SSE_DOC}})
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, run_id):
        """Replay a run's events, then follow it until it ends"""
        runs.owned(authenticated_principal().user_id, run_id)
        last = request.headers.get("Last-Event-ID") or (str(args["after"]) if args["after"] is not None else "0")
        return runs.event_stream(run_id, last_event_id=last)
