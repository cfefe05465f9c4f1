"""Request and response shapes of the executor (the seed's /api/execute and /api/execute/run, renamed)."""
import marshmallow as ma
from marshmallow import validate

from app.http import PageArgs

from .rating import RISKS
from .runs import RUN_STATUSES
from .service import TASK_STATUSES

STEP_STATUSES = ("pending", "running", "completed", "failed", "cancelled")


class ContextSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE  # clients send more (shell, locale, ...); only these matter

    os = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100),
                          metadata={"example": "MacIntel", "description": "The client's OS: picks brew, apt, dnf or "
                                                                          "winget. Absent or plain Linux: the "
                                                                          "server's own."})
    current_dir = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000),
                                   metadata={"example": "~", "description": "Inside your executor workspace: "
                                                                            "relative, ~ or ~/..."})
    project_type = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=50))


class PlanRequestSchema(ma.Schema):
    command = ma.fields.String(required=True, validate=validate.Length(min=1, max=2000),
                               metadata={"example": "install chrome"})
    context = ma.fields.Nested(ContextSchema, load_default=dict)


class StepSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    description = ma.fields.String(required=True)
    command = ma.fields.String(required=True)
    risk = ma.fields.String(required=True, validate=validate.OneOf(RISKS))
    reason = ma.fields.String(required=True, metadata={"description": "Why the step has this risk."})
    status = ma.fields.String(required=True, validate=validate.OneOf(STEP_STATUSES))


class PlanSchema(ma.Schema):
    task_id = ma.fields.String(required=True)
    command = ma.fields.String(required=True)
    steps = ma.fields.List(ma.fields.Nested(StepSchema), required=True)
    requires_confirmation = ma.fields.Boolean(required=True)
    estimated_time = ma.fields.String(required=True)
    planner = ma.fields.String(required=True, validate=validate.OneOf(("llm", "rules")))
    fallback_reason = ma.fields.String(required=True, allow_none=True,
                                       metadata={"description": "Why the model's plan was not used, if it was not."})
    intent = ma.fields.String(required=True, allow_none=True)
    os = ma.fields.String(required=True, metadata={"description": "macos, debian, fedora or windows"})
    current_dir = ma.fields.String(required=True)
    plan_hash = ma.fields.String(required=True)
    created_at = ma.fields.String(required=True)


class RunStepSchema(ma.Schema):
    id = ma.fields.Integer(required=True, validate=validate.Range(min=1, max=10_000))
    command = ma.fields.String(required=True, validate=validate.Length(min=1, max=8192))
    description = ma.fields.String(load_default="", validate=validate.Length(max=500))
    confirm = ma.fields.Boolean(load_default=False, metadata={
        "description": "Confirms this step when it differs from the plan (the request's `confirm` does not)."})


class RunRequestSchema(ma.Schema):
    task_id = ma.fields.String(required=True, validate=validate.Length(min=1, max=40))
    steps = ma.fields.List(ma.fields.Nested(RunStepSchema), required=True, validate=validate.Length(min=1, max=50))
    confirm = ma.fields.Boolean(load_default=False, metadata={
        "description": "Confirms the plan's moderate and dangerous steps."})
    stream = ma.fields.Boolean(load_default=False)

    @ma.validates("steps")
    def unique_ids(self, steps: list, **kwargs: object) -> None:
        ids = [s["id"] for s in steps if isinstance(s, dict) and "id" in s]
        if len(ids) != len(set(ids)):
            raise ma.ValidationError("Step ids must be unique.")


class StepResultSchema(ma.Schema):
    step_id = ma.fields.Integer(required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(("completed", "failed", "cancelled")))
    output = ma.fields.String(required=True, metadata={"description": "stdout (capped, with a truncation marker)"})
    error = ma.fields.String(required=True, allow_none=True, metadata={"description": "stderr or the reason, "
                                                                                      "when it failed"})
    stderr = ma.fields.String(required=True)
    exit_code = ma.fields.Integer(required=True, allow_none=True)
    duration_ms = ma.fields.Float(required=True)
    truncated = ma.fields.Boolean(required=True)


class RunResultSchema(ma.Schema):
    task_id = ma.fields.String(required=True)
    run_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(RUN_STATUSES))
    overall_status = ma.fields.String(required=True, validate=validate.OneOf(RUN_STATUSES), metadata={
        "description": "completed, partial (stopped after some steps succeeded) or failed, cancelled; queued or "
                       "running in a 202 answer"})
    results = ma.fields.List(ma.fields.Nested(StepResultSchema), required=True)
    error = ma.fields.String(required=True, allow_none=True)


class RunStepViewSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    description = ma.fields.String(required=True, allow_none=True)
    command = ma.fields.String(required=True)
    risk = ma.fields.String(required=True)
    reason = ma.fields.String(required=True, allow_none=True)
    modified = ma.fields.Boolean(required=True, allow_none=True)


class RunSchema(ma.Schema):
    run_id = ma.fields.String(required=True)
    task_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(RUN_STATUSES))
    overall_status = ma.fields.String(required=True, allow_none=True)
    confirmed = ma.fields.Boolean(required=True)
    matches_plan = ma.fields.Boolean(required=True)
    steps = ma.fields.List(ma.fields.Nested(RunStepViewSchema), required=True)
    results = ma.fields.List(ma.fields.Nested(StepResultSchema), required=True)
    error = ma.fields.String(required=True, allow_none=True)
    created_at = ma.fields.String(required=True)
    started_at = ma.fields.String(required=True, allow_none=True)
    finished_at = ma.fields.String(required=True, allow_none=True)


class TaskSchema(PlanSchema):
    status = ma.fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    run_count = ma.fields.Integer(required=True)
    last_run_id = ma.fields.String(required=True, allow_none=True)
    updated_at = ma.fields.String(required=True)


class TaskDetailSchema(TaskSchema):
    runs = ma.fields.List(ma.fields.Nested(RunSchema), required=True,
                          metadata={"description": "The most recent runs, newest first (at most 20)."})


class TaskListArgs(PageArgs):
    status = ma.fields.String(load_default=None, validate=validate.OneOf(TASK_STATUSES))


class EventArgs(ma.Schema):
    after = ma.fields.Integer(load_default=None, validate=validate.Range(min=0),
                              metadata={"description": "Replay events after this number (Last-Event-ID wins)."})
