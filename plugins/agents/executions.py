"""Execution records: creation, the append-only event log, SSE replay and follow, waiting, cancelling.

An execution's events are rows (`agent_execution_events`) numbered 1, 2, 3, ...
per execution, written and committed *before* they are published on the SSE
channel `agents.execution:<id>` with the same number as event id. A client
that connects late, or reconnects with `Last-Event-ID`, gets the stored rows
first and then the live ones (see app/sse.py on ordering): nothing is lost or
repeated, and the run never depends on anyone listening.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from flask import Response, current_app

from app import events, sse, tasks
from app.errors import ApiError, Conflict, NotFound
from app.extensions import db
from app.http import Page, paginate
from app.ids import new_id, utcnow
from app.security import Principal

from . import service
from .models import Execution, ExecutionEvent

log = logging.getLogger("lunaos.agents")

JOB_KIND = "agents.execution"
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT = (
    "queued", "running", "succeeded", "failed", "cancelled", "timed_out")
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT)
FINISHED = (SUCCEEDED, FAILED, CANCELLED, TIMED_OUT)
TERMINAL_EVENTS = ("done", "error")
KINDS = ("agent", "chain", "flow")
# HTTP statuses of the error codes an execution can end with (for the envelope when nothing was streamed yet).
ERROR_STATUS = {"LLM_UNAVAILABLE": 503, "LLM_UPSTREAM_ERROR": 502, "MODEL_NOT_FOUND": 404, "CANCELLED": 409,
                "TIMED_OUT": 504, "INTERNAL_ERROR": 500, "WORKER_LOST": 500}


def channel(execution_id: str) -> str:
    return f"agents.execution:{execution_id}"


def is_terminal(event: str, data: Any) -> bool:
    return event in TERMINAL_EVENTS


def create(principal: Principal, *, kind: str, target_id: str, target_name: str, input: Any,
           context: dict[str, Any], options: dict[str, Any], steps: list[dict[str, Any]] | None = None,
           flow_version: int | None = None, execution_id: str | None = None) -> Execution:
    """Store the execution with its `start` event, then queue the job that runs it."""
    now = utcnow()
    execution = Execution(id=execution_id or new_id("exe"), owner_id=principal.user_id, key_id=principal.key_id,
                          kind=kind, target_id=target_id, target_name=target_name[:200], flow_version=flow_version,
                          input=input, context=context or {}, options=options or {}, status=QUEUED, usage={},
                          steps=steps or [], last_seq=1, created_at=now, updated_at=now)
    start = {"execution_id": execution.id, "kind": kind, "target": {"id": target_id, "name": target_name}}
    db.session.add(execution)
    db.session.add(ExecutionEvent(execution_id=execution.id, seq=1, event="start", data=start, created_at=now))
    service.flush()
    timeout = int(current_app.config["AGENTS_EXECUTION_TIMEOUT"])
    try:
        job = tasks.enqueue(JOB_KIND, {"execution_id": execution.id}, owner_id=principal.user_id, timeout=timeout)
    except ApiError as error:  # the queue is down: the record says so instead of staying queued forever
        data = {"code": error.code, "status": error.status, "message": error.message, "tokens_streamed": False}
        finish(current_app._get_current_object(), execution.id, status=FAILED, event="error", data=data,  # type: ignore[attr-defined]
               error=data)
        raise
    # Only job_id changes here; the job may already be updating the row's other columns.
    db.session.execute(sa.update(Execution).where(Execution.id == execution.id).values(job_id=job.id),
                       execution_options={"synchronize_session": False})
    db.session.commit()
    # `start` is not published: nobody can follow the channel of an id not yet returned, except the
    # request that made it, which waits for later events; every other reader gets it from the replay.
    events.publish("agent.execution.started", {"execution_id": execution.id, "kind": kind, "target_id": target_id},
                   owner=principal.user_id)
    return execution


def owned(owner_id: str, execution_id: str) -> Execution:
    execution = db.session.get(Execution, execution_id, populate_existing=True)
    if execution is None or execution.owner_id != owner_id:
        raise NotFound("No such execution.")
    return reconcile(execution)


def list_executions(owner_id: str, page: int, per_page: int, kind: str | None = None,
                    status: str | None = None) -> Page:
    statement = sa.select(Execution).where(Execution.owner_id == owner_id)
    if kind:
        statement = statement.where(Execution.kind == kind)
    if status:
        statement = statement.where(Execution.status == status)
    return paginate(statement.order_by(Execution.created_at.desc(), Execution.id.desc()), page, per_page)


def stored_events(execution_id: str, after: int = 0) -> list[ExecutionEvent]:
    return list(db.session.scalars(sa.select(ExecutionEvent)
                                   .where(ExecutionEvent.execution_id == execution_id, ExecutionEvent.seq > after)
                                   .order_by(ExecutionEvent.seq)))


def event_stream(execution_id: str, last_event_id: str | None = None) -> Response:
    """SSE: the stored events after `last_event_id` (all of them without it), then live ones until done."""

    def replay(last: str | None) -> Iterator[tuple[str, Any, str]]:
        after = int(last) if last and last.strip().isdigit() else 0
        for row in stored_events(execution_id, after):
            yield row.event, row.data, str(row.seq)

    return sse.stream(channel(execution_id), replay=replay, last_event_id=last_event_id, terminal=is_terminal)


def reconcile(execution: Execution) -> Execution:
    """An execution whose job ended without finishing it (its worker died) is failed, with an event."""
    if execution.status in FINISHED or execution.job_id is None:
        return execution
    job = db.session.get(tasks.Job, execution.job_id, populate_existing=True)
    if job is None or job.status not in tasks.TERMINAL:
        return execution
    if job.status == tasks.CANCELLED:
        error = {"code": "CANCELLED", "message": "The execution was cancelled before it started."}
        status = CANCELLED
    else:
        error = {"code": "WORKER_LOST", "message": job.error or "The worker running this execution stopped."}
        status = FAILED
    finish(current_app._get_current_object(), execution.id, status=status, event="error", data=error,  # type: ignore[attr-defined]
           error=error)
    return db.session.get(Execution, execution.id, populate_existing=True) or execution


def append(app: Any, execution_id: str, event: str, data: dict[str, Any], **values: Any) -> int | None:
    """Store the next event (and any column changes) in one transaction, then publish it."""
    now = utcnow()
    seq = db.session.scalar(sa.update(Execution).where(Execution.id == execution_id)
                            .values(last_seq=Execution.last_seq + 1, updated_at=now, **values)
                            .returning(Execution.last_seq))
    if seq is None:  # deleted meanwhile (its owner was removed)
        db.session.rollback()
        return None
    db.session.add(ExecutionEvent(execution_id=execution_id, seq=seq, event=event, data=data, created_at=now))
    db.session.commit()
    sse.publish(channel(execution_id), event, data, id=seq, app=app)
    return seq


def finish(app: Any, execution_id: str, *, status: str, event: str, data: dict[str, Any], **values: Any) -> bool:
    """Write the final event and status, once: a second finisher (a reaper racing the job) changes nothing."""
    now = utcnow()
    seq = db.session.scalar(sa.update(Execution)
                            .where(Execution.id == execution_id, Execution.status.in_((QUEUED, RUNNING)))
                            .values(last_seq=Execution.last_seq + 1, updated_at=now, status=status, finished_at=now,
                                    **values)
                            .returning(Execution.last_seq))
    if seq is None:
        db.session.rollback()
        return False
    db.session.add(ExecutionEvent(execution_id=execution_id, seq=seq, event=event, data=data, created_at=now))
    db.session.commit()
    # The domain event first: whoever sees the final SSE event may rely on it having gone out.
    execution = db.session.get(Execution, execution_id)
    if execution is not None:
        kind = "agent.execution.completed" if status == SUCCEEDED else "agent.execution.failed"
        events.publish(kind, {"execution_id": execution_id, "status": status, "kind": execution.kind,
                              "target_id": execution.target_id, "error": values.get("error")},
                       owner=execution.owner_id)
    sse.publish(channel(execution_id), event, data, id=seq, app=app)
    return True


def cancel(owner_id: str, execution_id: str) -> Execution:
    execution = owned(owner_id, execution_id)
    if execution.status in FINISHED:
        raise Conflict(f"The execution has already {execution.status.replace('_', ' ')}.", code="EXECUTION_FINISHED",
                       details={"status": execution.status})
    job = db.session.get(tasks.Job, execution.job_id) if execution.job_id else None
    if job is not None and not job.finished:
        tasks.cancel(job)
    return reconcile(db.session.get(Execution, execution_id, populate_existing=True) or execution)


# --- waiting for a run, from the request that started it -------------------------------------

def subscribe(execution_id: str) -> tuple[Any, sse.Subscription]:
    """Listen before the job starts, so not one event can slip by."""
    broker, sub = sse.subscribe(channel(execution_id))
    if not sub.ready.wait(sse.SUBSCRIBE_WAIT_SECONDS):
        log.warning("SSE subscription to %s not confirmed in time", channel(execution_id))
    return broker, sub


def first_output(sub: sse.Subscription, timeout: float) -> sse.Message | None:
    """The first event that shows progress (a token, a step that finished or was skipped) or the end;
    None when none came in time (the stream then just follows)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = sub.get(timeout=min(left, 1.0))
        if message is sse.Subscription.CLOSED:
            return None
        if message is None:
            continue
        if message.event == "token" or message.event in TERMINAL_EVENTS:
            return message
        if message.event == "step" and (message.data or {}).get("status") != "started":
            return message
    return None


def wait_finished(execution_id: str, sub: sse.Subscription, timeout: float) -> None:
    """Until the final event arrives; the row is read only when the channel is quiet or lost."""
    deadline = time.monotonic() + timeout
    live = True
    while (left := deadline - time.monotonic()) > 0:
        if live:
            message = sub.get(timeout=min(left, 1.0))
            if message is not None and message is not sse.Subscription.CLOSED:
                if message.event in TERMINAL_EVENTS:
                    return
                continue
            live = message is None  # CLOSED: fell behind or lost Redis, so poll the row from now on
        else:
            time.sleep(min(left, 0.25))
        status = db.session.scalar(sa.select(Execution.status).where(Execution.id == execution_id))
        db.session.rollback()  # no transaction held open while waiting
        if status in FINISHED:
            return


def error_for(data: dict[str, Any], execution_id: str) -> ApiError:
    """The envelope error for an execution that failed before producing any output."""
    code = data.get("code") or "INTERNAL_ERROR"
    status = data.get("status") or ERROR_STATUS.get(code, 500)
    details = {key: value for key, value in data.items() if key not in ("code", "message", "status")}
    return ApiError(data.get("message") or "The execution failed.", code=code, status=int(status),
                    details={**details, "execution_id": execution_id})
