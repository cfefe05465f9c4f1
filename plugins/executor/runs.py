"""Run records: creation (and its job), the append-only event log, SSE replay and follow, waiting, cancelling.

A run's events are rows (`executor_run_events`) numbered 1, 2, 3, ... per run, committed *before*
they are published on the SSE channel `executor.run:<id>` with the same number as event id, so a
client that connects late or reconnects with `Last-Event-ID` loses nothing. Events: `start`
{run_id, task_id, steps}, `step` {step_id, status, ...} when a step starts and ends, `output`
{step_id, stream, lines}, and last `done` {run_id, task_id, overall_status, results}.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from flask import Response, current_app

from app import events, sse, tasks
from app.errors import Conflict, NotFound
from app.extensions import db
from app.ids import isoformat, new_id, utcnow
from app.security import Principal

from .models import ExecutorRun, ExecutorRunEvent, ExecutorTask

log = logging.getLogger("lunaos.executor")

JOB_KIND = "executor.run"
QUEUED, RUNNING, COMPLETED, PARTIAL, FAILED, CANCELLED = "queued", "running", "completed", "partial", "failed", \
    "cancelled"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (COMPLETED, PARTIAL, FAILED, CANCELLED)
RUN_STATUSES = (*ACTIVE, *FINISHED)
TERMINAL_EVENT = "done"


def channel(run_id: str) -> str:
    return f"executor.run:{run_id}"


def create(principal: Principal, task: ExecutorTask, steps: list[dict[str, Any]], confirm: bool,
           run_id: str | None = None) -> ExecutorRun:
    """Store the run with its `start` event, queue the job that runs it, and audit it."""
    if db.session.scalar(sa.select(sa.func.count()).select_from(ExecutorRun)
                         .where(ExecutorRun.task_id == task.id, ExecutorRun.status.in_(ACTIVE))):
        raise Conflict("This task is already running; wait for it or cancel it.", code="TASK_RUNNING")
    now = utcnow()
    planned = [[s["id"], s["command"]] for s in task.steps]
    run = ExecutorRun(id=run_id or new_id("run"), task_id=task.id, owner_id=principal.user_id, key_id=principal.key_id,
                      status=QUEUED, steps=steps, results=[], confirmed=confirm, last_seq=1,
                      matches_plan=[[s["id"], s["command"]] for s in steps] == planned, created_at=now,
                      updated_at=now)
    start = {"run_id": run.id, "task_id": task.id,
             "steps": [{k: s[k] for k in ("id", "description", "command", "risk")} for s in steps]}
    db.session.add(run)
    db.session.add(ExecutorRunEvent(run_id=run.id, seq=1, event="start", data=start, created_at=now))
    task.status, task.last_run_id, task.run_count = QUEUED, run.id, task.run_count + 1
    db.session.commit()
    timeout = int(len(steps) * (float(current_app.config["EXECUTOR_STEP_TIMEOUT"]) + 5) + 60)
    try:
        job = tasks.enqueue(JOB_KIND, {"run_id": run.id}, owner_id=principal.user_id, timeout=timeout)
    except Exception:  # the queue is down: the run must not stay `queued` (and block the task) forever
        db.session.rollback()
        finish(current_app._get_current_object(), run.id, FAILED, [],  # type: ignore[attr-defined]
               "the job queue is unavailable; nothing ran")
        raise
    db.session.execute(sa.update(ExecutorRun).where(ExecutorRun.id == run.id).values(job_id=job.id),
                       execution_options={"synchronize_session": False})
    db.session.commit()
    sse.publish(channel(run.id), "start", start, id=1)
    events.publish("executor.run.started", {
        "run_id": run.id, "task_id": task.id, "confirmed": confirm, "matches_plan": run.matches_plan,
        "steps": [{"id": s["id"], "command": s["command"][:500], "risk": s["risk"], "modified": s["modified"]}
                  for s in steps]}, owner=principal.user_id)
    return run


def owned(owner_id: str, run_id: str) -> ExecutorRun:
    run = db.session.get(ExecutorRun, run_id, populate_existing=True)
    if run is None or run.owner_id != owner_id:
        raise NotFound("No such run.")
    return reconcile(run)


def append(app: Any, run_id: str, event: str, data: dict[str, Any], **values: Any) -> int | None:
    """Store the next event (and any column changes) in one transaction, then publish it."""
    seqs = append_many(app, run_id, [(event, data)], **values)
    return seqs[0] if seqs else None


def append_many(app: Any, run_id: str, batch: list[tuple[str, dict[str, Any]]], **values: Any) -> list[int]:
    """Store several events (numbered in order) and column changes in one transaction, then publish them.
    Core statements on their own connection: a step costs one short transaction, not an ORM flush."""
    now = utcnow()
    with db.engine.begin() as connection:
        last = connection.execute(sa.update(ExecutorRun).where(ExecutorRun.id == run_id)
                                  .values(last_seq=ExecutorRun.last_seq + len(batch), updated_at=now, **values)
                                  .returning(ExecutorRun.last_seq)).scalar()
        if last is None:  # deleted meanwhile (its owner was removed)
            return []
        first = last - len(batch) + 1
        connection.execute(sa.insert(ExecutorRunEvent), [
            {"run_id": run_id, "seq": first + i, "event": event, "data": data, "created_at": now}
            for i, (event, data) in enumerate(batch)])
    for i, (event, data) in enumerate(batch):
        sse.publish(channel(run_id), event, data, id=first + i, app=app)
    return list(range(first, last + 1))


def overall(results: list[dict[str, Any]], cancelled: bool = False) -> str:
    if cancelled:
        return CANCELLED
    if results and all(r["status"] == "completed" for r in results):
        return COMPLETED
    if any(r["status"] == "completed" for r in results):
        return PARTIAL
    return FAILED


def finish(app: Any, run_id: str, status: str, results: list[dict[str, Any]], error: str | None = None) -> bool:
    """Write `done` and the final status once: a second finisher (a reaper racing the job) changes nothing."""
    now = utcnow()
    row = db.session.execute(sa.update(ExecutorRun)
                             .where(ExecutorRun.id == run_id, ExecutorRun.status.in_(ACTIVE))
                             .values(last_seq=ExecutorRun.last_seq + 1, updated_at=now, status=status,
                                     finished_at=now, results=results, error=error)
                             .returning(ExecutorRun.last_seq, ExecutorRun.task_id, ExecutorRun.owner_id),
                             execution_options={"synchronize_session": False}).first()
    if row is None:
        db.session.rollback()
        return False
    seq, task_id, owner_id = row
    data = {"run_id": run_id, "task_id": task_id, "overall_status": status, "results": results, "error": error}
    db.session.add(ExecutorRunEvent(run_id=run_id, seq=seq, event=TERMINAL_EVENT, data=data, created_at=now))
    db.session.execute(sa.update(ExecutorTask).where(ExecutorTask.id == task_id, ExecutorTask.last_run_id == run_id)
                       .values(status=status, updated_at=now))
    db.session.commit()
    sse.publish(channel(run_id), TERMINAL_EVENT, data, id=seq, app=app)
    events.publish("executor.run.finished", {
        "run_id": run_id, "task_id": task_id, "overall_status": status, "error": error,
        "steps": [{"id": r["step_id"], "status": r["status"], "exit_code": r.get("exit_code")} for r in results]},
        owner=owner_id, actor=owner_id)
    return True


def reconcile(run: ExecutorRun) -> ExecutorRun:
    """A run whose job ended without finishing it (worker lost, cancelled while queued) is finished now."""
    if run.status in FINISHED or run.job_id is None:
        return run
    job = db.session.get(tasks.Job, run.job_id, populate_existing=True)
    if job is None or job.status not in tasks.TERMINAL:
        return run
    if job.status == tasks.CANCELLED:
        status, error = CANCELLED, "cancelled before it started"
    else:
        status, error = FAILED, job.error or "the worker running it stopped"
    finish(current_app._get_current_object(), run.id, status, list(run.results or []), error)  # type: ignore
    return db.session.get(ExecutorRun, run.id, populate_existing=True) or run


def cancel(owner_id: str, task_id: str) -> ExecutorRun:
    task = db.session.get(ExecutorTask, task_id)
    if task is None or task.owner_id != owner_id:
        raise NotFound("No such task.")
    run = db.session.scalar(sa.select(ExecutorRun).where(ExecutorRun.task_id == task_id,
                                                         ExecutorRun.status.in_(ACTIVE))
                            .order_by(ExecutorRun.created_at.desc()).limit(1))
    if run is None:
        raise Conflict("Nothing of this task is running.", code="NOT_RUNNING", details={"status": task.status})
    job = db.session.get(tasks.Job, run.job_id) if run.job_id else None
    if job is not None and not job.finished:
        tasks.cancel(job)
    return reconcile(db.session.get(ExecutorRun, run.id, populate_existing=True) or run)


def run_view(run: ExecutorRun) -> dict[str, Any]:
    return {"run_id": run.id, "task_id": run.task_id, "status": run.status,
            "overall_status": run.status if run.status in FINISHED else None,
            "confirmed": run.confirmed, "matches_plan": run.matches_plan,
            "steps": [{k: s.get(k) for k in ("id", "description", "command", "risk", "reason", "modified")}
                      for s in run.steps], "results": list(run.results or []), "error": run.error,
            "created_at": isoformat(run.created_at), "started_at": isoformat(run.started_at),
            "finished_at": isoformat(run.finished_at)}


def result_view(run: ExecutorRun) -> dict[str, Any]:
    """The seed's run answer: {task_id, results, overall_status}, plus the run's id and status."""
    return {"task_id": run.task_id, "run_id": run.id, "status": run.status,
            "overall_status": run.status,
            "results": list(run.results or []), "error": run.error}


# --- SSE and waiting ---------------------------------------------------------------------------------------

def event_stream(run_id: str, last_event_id: str | None = None) -> Response:
    def replay(last: str | None) -> Iterator[tuple[str, Any, str]]:
        after = int(last) if last and last.strip().isdigit() else 0
        rows = db.session.scalars(sa.select(ExecutorRunEvent).where(ExecutorRunEvent.run_id == run_id,
                                                                    ExecutorRunEvent.seq > after)
                                  .order_by(ExecutorRunEvent.seq))
        for row in rows:
            yield row.event, row.data, str(row.seq)

    return sse.stream(channel(run_id), replay=replay, last_event_id=last_event_id,
                      terminal=lambda event, data: event == TERMINAL_EVENT)


def subscribe(run_id: str) -> tuple[Any, sse.Subscription]:
    """Listen before the job starts, so not one event slips by."""
    broker, sub = sse.subscribe(channel(run_id))
    if not sub.ready.wait(sse.SUBSCRIBE_WAIT_SECONDS):
        log.warning("SSE subscription to %s not confirmed in time", channel(run_id))
    return broker, sub


def wait_finished(run_id: str, sub: sse.Subscription, timeout: float) -> None:
    """Until `done` arrives; the row is read only when the channel is quiet or lost."""
    deadline = time.monotonic() + timeout
    live = True
    while (left := deadline - time.monotonic()) > 0:
        if live:
            message = sub.get(timeout=min(left, 1.0))
            if message is not None and message is not sse.Subscription.CLOSED:
                if message.event == TERMINAL_EVENT:
                    return
                continue
            live = message is None
        else:
            time.sleep(min(left, 0.25))
        run = db.session.get(ExecutorRun, run_id, populate_existing=True)
        status = reconcile(run).status if run is not None else None
        db.session.rollback()
        if status is None or status in FINISHED:
            return
