"""Recovering jobs whose worker died: `reap()` and RQ's failure callback `on_rq_failure`.

Part of the jobs machinery of app/tasks.py (see its docstring for the liveness model); the
state changes go through the same compare-and-set transitions as every other runner step.
"""
from __future__ import annotations

import contextvars
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context

from . import redis_client
from .extensions import db
from .ids import utcnow
from .tasks import (ACTIVE, QUEUED, REAP_BATCH, RUNNING, Job, _dispatch, _fail_or_retry, _redispatch, _runtime,
                    _transition, describe)

log = logging.getLogger("lunaos.jobs")


@dataclass
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)

    def record(self, outcome: str | None, job_id: str) -> None:
        if outcome == "requeued" or outcome == "redispatched":
            self.requeued.append(job_id)
        elif outcome in ("failed", "cancelled"):
            self.failed.append(job_id)

    def __str__(self) -> str:
        return f"{len(self.failed)} failed, {len(self.requeued)} re-queued, {len(self.adopted)} adopted"


_current_report: contextvars.ContextVar[ReapReport | None] = contextvars.ContextVar("lunaos_reap", default=None)


def _recover(app: Flask, job_id: str, attempt: int, reason: str) -> str | None:
    """A worker stopped while it held attempt `attempt`: re-queue or fail the row."""
    job = db.session.get(Job, job_id, populate_existing=True)
    outcome: str | None = None
    if job is None:
        return None
    if job.status == RUNNING and job.attempts == attempt:
        outcome = _fail_or_retry(app, job_id, attempt, reason)
    elif job.status == QUEUED and job.attempts == attempt - 1 and app.config.get("REDIS_URL"):
        # The worker died between taking the RQ job and starting it: nothing ran, queue it again.
        again = _transition(app, job_id, [Job.status == QUEUED, Job.attempts == attempt - 1], heartbeat_at=utcnow())
        if again is not None:
            outcome = "redispatched" if _redispatch(app, again, attempt) else "failed"
    if outcome is not None:
        log.warning("job %s attempt %d: %s -> %s", job_id, attempt, reason, outcome)
    report = _current_report.get()
    if report is not None:
        report.record(outcome, job_id)
    return outcome


def on_rq_failure(rq_job: Any, connection: Any, exc_type: type[BaseException] | None,
                  exc_value: BaseException | None, traceback: Any) -> None:
    """RQ failure callback: RQ found the job abandoned, or our runner itself crashed."""
    from rq.exceptions import AbandonedJobError
    from rq.timeouts import JobTimeoutException

    try:
        job_id, attempt = str(rq_job.args[0]), int(rq_job.args[1])
    except (IndexError, TypeError, ValueError):
        return
    if not has_app_context():
        log.warning("job %s: RQ reported %s outside the app; the reaper will recover it", job_id,
                    getattr(exc_type, "__name__", exc_type))
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        reason = "worker lost: the worker running this job stopped before it finished"
    elif exc_type is not None and issubclass(exc_type, JobTimeoutException):
        reason = "timed out"
    else:
        reason = describe(exc_value) if exc_value is not None else "the worker failed to run this job"
    try:
        _recover(app, job_id, attempt, reason)
    finally:
        db.session.remove()


def reap(app: Flask | None = None) -> ReapReport:
    """Recover jobs whose worker died. Safe to run anywhere, any number of times, concurrently."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    _runtime(app).last_reap = time.monotonic()  # the background reaper need not repeat this one at once
    report = ReapReport()
    token = _current_report.set(report)
    try:
        with app.app_context():
            client = redis_client.client(app)
            if client is not None:
                _reap_rq(app, client)
            cutoff = utcnow() - timedelta(seconds=float(app.config["JOBS_STALE_AFTER"]))
            stale = db.session.execute(
                sa.select(Job.id, Job.attempts, Job.status)
                .where(Job.status.in_(ACTIVE), Job.heartbeat_at < cutoff)
                .order_by(Job.heartbeat_at)
                .limit(REAP_BATCH)
            ).all()
            db.session.rollback()
            reason = f"worker lost: no heartbeat for more than {app.config['JOBS_STALE_AFTER']:g} seconds"
            for job_id, attempts, status in stale:
                if status == RUNNING:
                    _recover(app, job_id, attempts, reason)
                elif client is None:
                    # In-process: the process that queued it is gone; this one takes it over.
                    adopted = _transition(app, job_id, [Job.status == QUEUED, Job.attempts == attempts,
                                                        Job.heartbeat_at < cutoff], heartbeat_at=utcnow())
                    if adopted is not None:
                        _dispatch(app, adopted, attempts + 1)
                        report.adopted.append(job_id)
            db.session.remove()
    finally:
        _current_report.reset(token)
    return report


def _reap_rq(app: Flask, client: Any) -> None:
    """Let RQ find abandoned executions; it calls `on_rq_failure` for each of them."""
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer
    from rq.timeouts import TimerDeathPenalty, UnixSignalDeathPenalty

    # RQ runs callbacks under a death penalty; the SIGALRM one works only in the main thread.
    penalty = UnixSignalDeathPenalty if threading.current_thread() is threading.main_thread() else TimerDeathPenalty
    registry = StartedJobRegistry(app.config["JOBS_QUEUE"], connection=client, serializer=JSONSerializer,
                                  death_penalty_class=penalty)
    registry.cleanup()
