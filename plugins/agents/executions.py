"""Execution records: creation, the append-only event log, SSE replay and follow, waiting, cancelling.

An execution's events are rows (`agent_execution_events`) numbered 1, 2, 3, ...
per execution, written and committed *before* they are published on the SSE
channel `agents.execution:<id>` with the same number as event id. A client
that connects late, or reconnects with `Last-Event-ID`, gets the stored rows
first and then the live ones (see app/sse.py on ordering): nothing is lost or
repeated, and the run never depends on anyone listening.

A flow that reaches a `human_input` node pauses: its job ends, the execution
is `waiting_input` and its log gets a `waiting_input` event {node_id, prompt,
pause}. An SSE stream ends after that event, as after `done` or `error`; a
client that reconnects with `Last-Event-ID` (as EventSource does) waits,
heartbeating, and follows the run once `POST /v1/executions/{id}/resume` has
queued its next job (a `resumed` event {node_id, pause} comes first). A
`waiting_input` event followed by anything in a replay does not end it.
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
QUEUED, RUNNING, WAITING_INPUT, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT = (
    "queued", "running", "waiting_input", "succeeded", "failed", "cancelled", "timed_out")
STATUSES = (QUEUED, RUNNING, WAITING_INPUT, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT)
FINISHED = (SUCCEEDED, FAILED, CANCELLED, TIMED_OUT)
TERMINAL_EVENTS = ("done", "error")
WAITING_EVENT, RESUMED_EVENT = "waiting_input", "resumed"
KINDS = ("agent", "chain", "flow")
# HTTP statuses of the error codes an execution can end with (for the envelope when nothing was streamed yet).
ERROR_STATUS = {"LLM_UNAVAILABLE": 503, "LLM_UPSTREAM_ERROR": 502, "MODEL_NOT_FOUND": 404, "CANCELLED": 409,
                "TIMED_OUT": 504, "INTERNAL_ERROR": 500, "WORKER_LOST": 500, "NODE_TIMEOUT": 504,
                "FLOW_STEP_LIMIT": 422}


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
    _queue_job(current_app._get_current_object(), execution.id, principal.user_id)  # type: ignore[attr-defined]
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

    passed: set[Any] = set()  # pauses the replay shows something after (resumed, cancelled): history

    def replay(last: str | None) -> Iterator[tuple[str, Any, str]]:
        after = int(last) if last and last.strip().isdigit() else 0
        rows = stored_events(execution_id, after)
        passed.update((row.data or {}).get("pause") for row in rows[:-1] if row.event == WAITING_EVENT)
        for row in rows:
            yield row.event, row.data, str(row.seq)

    def terminal(event: str, data: Any) -> bool:
        if event == WAITING_EVENT:
            return (data or {}).get("pause") not in passed
        return is_terminal(event, data)

    return sse.stream(channel(execution_id), replay=replay, last_event_id=last_event_id, terminal=terminal)


def reconcile(execution: Execution) -> Execution:
    """An execution whose job ended without finishing it (its worker died) is failed, with an event.

    A `waiting_input` execution's job ended on purpose (it paused)."""
    if execution.status in FINISHED or execution.status == WAITING_INPUT or execution.job_id is None:
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


def finish(app: Any, execution_id: str, *, status: str, event: str, data: dict[str, Any],
           only_from: tuple[str, ...] = (QUEUED, RUNNING), **values: Any) -> bool:
    """Write the final event and status, once: a second finisher (a reaper racing the job) changes nothing."""
    now = utcnow()
    seq = db.session.scalar(sa.update(Execution)
                            .where(Execution.id == execution_id, Execution.status.in_(only_from))
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
    if execution.status == WAITING_INPUT:  # no job holds it: end it here
        _cancel_waiting(execution)
        return db.session.get(Execution, execution_id, populate_existing=True) or execution
    job = db.session.get(tasks.Job, execution.job_id) if execution.job_id else None
    if job is not None and not job.finished:
        tasks.cancel(job)
    execution = reconcile(db.session.get(Execution, execution_id, populate_existing=True) or execution)
    if execution.status == WAITING_INPUT:  # the run paused while this request was on its way
        _cancel_waiting(execution)
        execution = db.session.get(Execution, execution_id, populate_existing=True) or execution
    return execution


# --- pausing for input and resuming --------------------------------------------------------

def pause(app: Any, execution_id: str, waiting: dict[str, Any], **values: Any) -> bool:
    """Running -> waiting_input with the `waiting_input` event; False if the run was ended or its job was asked
    to cancel meanwhile (the job may not have noticed yet: it looks at most every JOBS_CANCEL_CHECK_SECONDS)."""
    now = utcnow()
    cancel_asked = sa.exists().where(tasks.Job.id == Execution.job_id, tasks.Job.cancel_requested_at.is_not(None))
    seq = db.session.scalar(sa.update(Execution)
                            .where(Execution.id == execution_id, Execution.status == RUNNING, ~cancel_asked)
                            .values(last_seq=Execution.last_seq + 1, updated_at=now, status=WAITING_INPUT, **values)
                            .returning(Execution.last_seq))
    if seq is None:
        db.session.rollback()
        return False
    db.session.add(ExecutionEvent(execution_id=execution_id, seq=seq, event=WAITING_EVENT, data=waiting,
                                  created_at=now))
    db.session.commit()
    sse.publish(channel(execution_id), WAITING_EVENT, waiting, id=seq, app=app)
    return True


def _not_waiting(status: str) -> Conflict:
    return Conflict(f"The execution is not waiting for input (it is {status.replace('_', ' ')}).",
                    code="NOT_WAITING", details={"status": status})


def resume(owner_id: str, execution_id: str, value: Any) -> Execution:
    """Give the waiting `human_input` node its input and queue the job that continues the run.

    Compare-and-set on the status: of two concurrent resumes (or a resume and a cancel) one wins and
    the other gets 409 NOT_WAITING. The new job continues from `state`; nodes already run are not run again."""
    execution = owned(owner_id, execution_id)
    if execution.status != WAITING_INPUT:
        raise _not_waiting(execution.status)
    state = dict(execution.state or {})
    waiting = state.get("waiting") or {}
    state["inputs"] = {**(state.get("inputs") or {}), waiting.get("node_id"): value}
    state["waiting"] = None
    now = utcnow()
    # job_id cleared in the same UPDATE: the paused job has finished, and reconcile() must not take it for lost.
    seq = db.session.scalar(sa.update(Execution)
                            .where(Execution.id == execution_id, Execution.status == WAITING_INPUT)
                            .values(last_seq=Execution.last_seq + 1, updated_at=now, status=QUEUED, state=state,
                                    job_id=None)
                            .returning(Execution.last_seq))
    if seq is None:
        db.session.rollback()
        current = db.session.get(Execution, execution_id, populate_existing=True)
        raise _not_waiting(current.status if current is not None else CANCELLED)
    data = {"node_id": waiting.get("node_id"), "pause": waiting.get("pause")}
    db.session.add(ExecutionEvent(execution_id=execution_id, seq=seq, event=RESUMED_EVENT, data=data, created_at=now))
    db.session.commit()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    sse.publish(channel(execution_id), RESUMED_EVENT, data, id=seq, app=app)
    _queue_job(app, execution_id, owner_id)
    return db.session.get(Execution, execution_id, populate_existing=True) or execution


def _queue_job(app: Any, execution_id: str, owner_id: str) -> None:
    timeout = int(current_app.config["AGENTS_EXECUTION_TIMEOUT"])
    try:
        job = tasks.enqueue(JOB_KIND, {"execution_id": execution_id}, owner_id=owner_id, timeout=timeout)
    except ApiError as error:  # the queue is down: the record says so instead of staying queued forever
        data = {"code": error.code, "status": error.status, "message": error.message, "tokens_streamed": False}
        finish(app, execution_id, status=FAILED, event="error", data=data, error=data)
        raise
    # Only job_id changes here; the job may already be updating the row's other columns.
    db.session.execute(sa.update(Execution).where(Execution.id == execution_id).values(job_id=job.id),
                       execution_options={"synchronize_session": False})
    db.session.commit()


def _cancel_waiting(execution: Execution) -> None:
    from .models import NodeRun

    waiting = (execution.state or {}).get("waiting") or {}
    steps = [dict(step, status="cancelled") if step.get("node_id") == waiting.get("node_id")
             and step.get("status") == "waiting" else step for step in execution.steps or []]
    error = {"code": "CANCELLED", "status": 409, "message": "The execution was cancelled while waiting for input.",
             "tokens_streamed": False}
    done = finish(current_app._get_current_object(), execution.id, status=CANCELLED, event="error",  # type: ignore[attr-defined]
                  data=error, only_from=(WAITING_INPUT,), error=error, steps=steps)
    if not done:
        current = db.session.get(Execution, execution.id, populate_existing=True)
        status = current.status if current is not None else CANCELLED
        if status in FINISHED:
            raise Conflict(f"The execution has already {status.replace('_', ' ')}.", code="EXECUTION_FINISHED",
                           details={"status": status})
        return  # resumed meanwhile: it runs again; cancelling that is the caller's next request
    now = utcnow()
    db.session.execute(sa.update(NodeRun).where(NodeRun.execution_id == execution.id, NodeRun.status == "waiting")
                       .values(status="cancelled", finished_at=now))
    db.session.commit()


def node_runs(owner_id: str, execution_id: str, page: int, per_page: int) -> Page:
    from .models import NodeRun

    owned(owner_id, execution_id)
    statement = (sa.select(NodeRun).where(NodeRun.execution_id == execution_id)
                 .order_by(NodeRun.started_at, NodeRun.index, NodeRun.id))
    return paginate(statement, page, per_page)


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
        if message.event in ("token", WAITING_EVENT) or message.event in TERMINAL_EVENTS:
            return message
        if message.event == "step" and (message.data or {}).get("status") != "started":
            return message
    return None


def wait_finished(execution_id: str, sub: sse.Subscription, timeout: float) -> None:
    """Until the final event (or a pause for input) arrives; the row is read only when the channel is quiet or lost."""
    deadline = time.monotonic() + timeout
    live = True
    while (left := deadline - time.monotonic()) > 0:
        if live:
            message = sub.get(timeout=min(left, 1.0))
            if message is not None and message is not sse.Subscription.CLOSED:
                if message.event in TERMINAL_EVENTS or message.event == WAITING_EVENT:
                    return
                continue
            live = message is None  # CLOSED: fell behind or lost Redis, so poll the row from now on
        else:
            time.sleep(min(left, 0.25))
        status = db.session.scalar(sa.select(Execution.status).where(Execution.id == execution_id))
        db.session.rollback()  # no transaction held open while waiting
        if status in FINISHED or status == WAITING_INPUT:
            return


def error_for(data: dict[str, Any], execution_id: str) -> ApiError:
    """The envelope error for an execution that failed before producing any output."""
    code = data.get("code") or "INTERNAL_ERROR"
    status = data.get("status") or ERROR_STATUS.get(code, 500)
    details = {key: value for key, value in data.items() if key not in ("code", "message", "status")}
    return ApiError(data.get("message") or "The execution failed.", code=code, status=int(status),
                    details={**details, "execution_id": execution_id})
