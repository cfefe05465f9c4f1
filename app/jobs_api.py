"""Job routes: status, list, cancel and an SSE stream of progress. Owner only."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from flask.views import MethodView

from . import sse, tasks
from .extensions import db
from .http import Blueprint, PageArgs, Timestamp, paginate
from .security import authenticated_principal, owned_or_404, require
from .tasks import Job

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs",
                description="Background jobs: status, progress (also as server-sent events) and cancellation.")


class JobSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "job_01hx0c7k3m5r8v2w4y6z8a0b1c"})
    kind = ma.fields.String(required=True, metadata={"example": "rag.index"})
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(tasks.STATUSES))
    progress = ma.fields.Float(required=True, metadata={"description": "0-100"})
    message = ma.fields.String(required=True, allow_none=True, metadata={"description": "Latest progress note."})
    result = ma.fields.Raw(required=True, allow_none=True, metadata={"description": "What the job returned."})
    error = ma.fields.String(required=True, allow_none=True,
                             metadata={"description": "Why the last attempt failed (kept when it is retried)."})
    attempts = ma.fields.Integer(required=True)
    max_retries = ma.fields.Integer(required=True)
    cancel_requested = ma.fields.Boolean(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)
    started_at = Timestamp(required=True, allow_none=True)
    finished_at = Timestamp(required=True, allow_none=True)


class JobListArgs(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf(tasks.STATUSES))
    kind = ma.fields.String(validate=ma.validate.Length(min=1, max=100))


def _owned(job_id: str) -> Job:
    return owned_or_404(db.session.get(Job, job_id))


@blp.route("")
class Jobs(MethodView):
    @require()
    @blp.arguments(JobListArgs, location="query")
    @blp.paginated(JobSchema)
    def get(self, args: dict[str, Any]):
        """The caller's jobs, newest first"""
        statement = sa.select(Job).where(Job.owner_id == authenticated_principal().user_id)
        if args.get("status"):
            statement = statement.where(Job.status == args["status"])
        if args.get("kind"):
            statement = statement.where(Job.kind == args["kind"])
        statement = statement.order_by(Job.created_at.desc(), Job.id.desc())
        return paginate(statement, args["page"], args["per_page"])


@blp.route("/<string:job_id>")
class JobItem(MethodView):
    @require()
    @blp.response(200, JobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, job_id: str):
        """Status, progress, result or error of one job"""
        return _owned(job_id)


@blp.route("/<string:job_id>/cancel")
class JobCancel(MethodView):
    @require()
    @blp.response(200, JobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="The job has already finished.")
    def post(self, job_id: str):
        """Cancel a job: a queued one at once, a running one as soon as it checks (see `cancel_requested`)"""
        return tasks.cancel(_owned(job_id))


@blp.route("/<string:job_id>/events")
class JobEvents(MethodView):
    @require()
    @blp.doc(responses={"200": {
        "description": "Server-sent events: first `status` (the job as `GET /v1/jobs/{job_id}` shows it), then "
                       "live `progress` and `status` events and any the job publishes; the stream ends after a "
                       "`status` event with a final status. Event ids are increasing integers.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }})
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, job_id: str):
        """Follow a job's progress as server-sent events"""
        _owned(job_id)

        def replay(last_event_id: str | None) -> Iterator[tuple[str, Any, str]]:
            # State, not history: whatever the client saw, the current snapshot brings it up to date.
            job = db.session.get(Job, job_id, populate_existing=True)
            if job is not None:
                yield "status", tasks.snapshot(job), str(job.seq)

        return sse.stream(f"job:{job_id}", replay=replay, terminal=tasks.is_terminal_event)
