"""Jobs: the `jobs` table, `@task` registry, `enqueue()` and the runner.

The RQ worker and `flask jobs` are in app/job_worker.py, the reaper in app/job_reaper.py.

A job is a row first. `enqueue()` commits it, then hands `(job_id, attempt)` to
RQ when `REDIS_URL` is set (run by `flask worker`) or to a bounded in-process
thread pool otherwise. Whoever runs it moves the row through
`queued -> running -> succeeded | failed | cancelled` with compare-and-set
UPDATEs keyed on `(status, attempts)`, so a late duplicate (a re-queued job
whose first worker turns out to be alive, a reaper racing a worker) can never
overwrite a newer state. Every visible change bumps `seq` and is published on
the SSE channel `job:<id>` with `seq` as the event id.

Liveness and recovery
- The process running a job refreshes `heartbeat_at` every
  `JOBS_HEARTBEAT_SECONDS` (in-process mode: also for the jobs it has queued).
- RQ mode: the worker keeps RQ's own execution heartbeat alive while a job
  runs, with a TTL of `JOBS_ABANDONED_AFTER` seconds. If the worker dies, RQ's
  `StartedJobRegistry.cleanup()` finds the expired execution and calls the
  job's failure callback with `AbandonedJobError`; `on_rq_failure` then
  re-queues our row (retries left) or fails it with "worker lost".
- Any mode: a `running` row whose `heartbeat_at` is older than
  `JOBS_STALE_AFTER` is handled the same way; in-process mode also adopts
  `queued` rows whose owning process stopped heart-beating.
- `reap()` does all of this; workers run it from RQ's periodic maintenance
  (every `JOBS_REAP_INTERVAL`), in-process web servers from a background
  thread, operators with `flask jobs reap`.

The RQ worker class is `LunaWorker`, a `SimpleWorker`: jobs run in the
worker process itself, so the app, its connection pools and lazily loaded
models (the embedding model, FAISS indexes) are built once per worker and not
once per job, as a fork per job would. The price is that a job that crashes
the interpreter takes the worker with it; the heartbeat/reaper path above is
what makes that recoverable. Run several workers for parallelism.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue as queue_lib
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy.orm import Mapped, mapped_column

from . import health, logs, redis_client, sse
from .config import ConfigError
from .errors import Conflict, ServiceUnavailable
from .extensions import db
from .ids import new_id, utcnow
from .models import TimestampMixin
from .process import pid as current_pid

log = logging.getLogger("lunaos.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)

# Timing settings (defaults and meanings in app/config.py Defaults), checked at start-up.
TIMING_SETTINGS = ("JOBS_DEFAULT_TIMEOUT", "JOBS_HEARTBEAT_SECONDS", "JOBS_ABANDONED_AFTER", "JOBS_STALE_AFTER",
            "JOBS_REAP_INTERVAL", "JOBS_PROGRESS_INTERVAL", "JOBS_CANCEL_CHECK_SECONDS")
RQ_RESULT_TTL = 300  # our row holds the result; RQ's copy is only for debugging
RQ_FAILURE_TTL = 7 * 24 * 3600
REAP_BATCH = 500
_POOL_IDLE_SECONDS = 30.0


class Job(TimestampMixin, db.Model):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("job"))
    owner_id: Mapped[str | None] = mapped_column(sa.String(40), index=True)
    kind: Mapped[str] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(16), default=QUEUED, index=True)
    progress: Mapped[float] = mapped_column(default=0.0)
    message: Mapped[str | None] = mapped_column(sa.String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[Any] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(default=0)
    max_retries: Mapped[int] = mapped_column(default=0)
    timeout: Mapped[int | None]
    cancel_requested_at: Mapped[datetime | None]
    seq: Mapped[int] = mapped_column(default=0)  # bumped by every change clients see; the SSE event id
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind} {self.status}>"


# ---------------------------------------------------------------------------------------------
# Registry and the job-facing API


TaskFunction = Callable[..., Any]
_registry: dict[str, TaskFunction] = {}


def task(kind: str) -> Callable[[TaskFunction], TaskFunction]:
    """Register `fn(ctx: JobContext, **payload) -> JSON-serialisable result` as job kind `kind`."""

    def decorator(fn: TaskFunction) -> TaskFunction:
        existing = _registry.get(kind)
        if existing is not None and _qualname(existing) != _qualname(fn):
            raise RuntimeError(
                f"job kind {kind!r} is registered twice: by {_qualname(existing)} and by {_qualname(fn)}"
            )
        _registry[kind] = fn
        return fn

    return decorator


def registered_kinds() -> list[str]:
    return sorted(_registry)


def _qualname(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


class JobError(Exception):
    """Raise from a job to fail it with exactly this message (shown to the job's owner)."""


class JobCancelled(Exception):
    """Raised by `ctx.raise_if_cancelled()`; ends the job as cancelled."""


class JobContext:
    """What a running job sees: its identity, progress reporting, events and cancellation."""

    def __init__(self, app: Flask, job: Job, attempt: int, deadline: float | None):
        self.app = app
        self.job_id = job.id
        self.owner_id = job.owner_id
        self.kind = job.kind
        self.attempt = attempt
        self.channel = f"job:{job.id}"
        self._deadline = deadline
        self._state_lock = threading.Lock()  # pending progress (the job thread never waits on the database)
        self.write_lock = threading.Lock()  # orders this job's writes and their events
        self._pending: tuple[float, str | None] | None = None
        self.progress_value = job.progress
        self.message = job.message
        self.last_flush = 0.0
        self._last_check = time.monotonic()
        self.cancel_seen = False  # the job was told it is cancelled (it may stop)
        self.timed_out = False
        self.lost = False  # the row no longer belongs to this attempt (reaped, re-queued elsewhere)

    def progress(self, percent: float, message: str | None = None) -> None:
        """Record progress (0-100). Written and published at most every JOBS_PROGRESS_INTERVAL."""
        value = float(percent)
        if not math.isfinite(value):
            raise ValueError("progress must be a finite number")
        value = min(max(value, 0.0), 100.0)
        with self._state_lock:
            self._pending = (value, message if message is not None else self.message)
            self.progress_value, self.message = self._pending
        if time.monotonic() - self.last_flush >= float(self.app.config["JOBS_PROGRESS_INTERVAL"]):
            _runtime(self.app).wake()

    def take_pending(self) -> tuple[float, str | None] | None:
        with self._state_lock:
            pending, self._pending = self._pending, None
            return pending

    def publish(self, event: str, data: Any) -> None:
        """Publish a custom event on this job's SSE channel (`job:<id>`)."""
        sse.publish(self.channel, event, data, app=self.app)

    def cancelled(self) -> bool:
        """True once the job should stop: cancel requested, timed out, or taken over by the reaper."""
        if not self.cancel_seen:
            now = time.monotonic()
            if self._deadline is not None and now > self._deadline:
                self.timed_out = self.cancel_seen = True
            elif now - self._last_check >= float(self.app.config["JOBS_CANCEL_CHECK_SECONDS"]):
                self._last_check = now
                self._check_row()
        return self.cancel_seen

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled()

    def _check_row(self) -> None:
        # Its own connection: the job's session may be mid-transaction.
        with self.app.app_context(), db.engine.connect() as connection:
            row = connection.execute(
                sa.select(Job.status, Job.attempts, Job.cancel_requested_at).where(Job.id == self.job_id)
            ).first()
        if row is None or row.status != RUNNING or row.attempts != self.attempt:
            self.lost = self.cancel_seen = True
        elif row.cancel_requested_at is not None:
            self.cancel_seen = True


# ---------------------------------------------------------------------------------------------
# Enqueue, cancel, snapshot


def enqueue(kind: str, payload: dict[str, Any] | None = None, *, owner_id: str | None = None,
            retries: int = 0, timeout: int | None = None) -> Job:
    """Create the job row and start it: on RQ with REDIS_URL, in-process otherwise.

    Commits the current session first, so the job's runner sees everything the
    caller wrote before enqueueing (for example the document a job will index).
    """
    if kind not in _registry:
        raise ValueError(f"unknown job kind {kind!r}; registered: {', '.join(registered_kinds()) or 'none'}")
    payload = dict(payload or {})
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as error:
        raise ValueError(f"payload of a {kind!r} job must be JSON-serialisable: {error}") from None
    if retries < 0 or (timeout is not None and timeout <= 0):
        raise ValueError("retries must be >= 0 and timeout > 0")
    now = utcnow()
    job = Job(id=new_id("job"), owner_id=owner_id, kind=kind, status=QUEUED, payload=payload, max_retries=retries,
              timeout=timeout, progress=0.0, attempts=0, seq=1, heartbeat_at=now, created_at=now, updated_at=now)
    db.session.add(job)
    db.session.commit()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        _dispatch(app, job, attempt=1)
    except Exception as error:
        log.exception("could not queue job %s", job.id)
        _transition(app, job.id, [Job.status == QUEUED],
                    status=FAILED, error="could not be queued: the job queue is unavailable", finished_at=utcnow())
        raise ServiceUnavailable("The job queue is unavailable; try again shortly.") from error
    return job


def cancel(job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop (it sees `ctx.cancelled()`)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    now = utcnow()
    if job.status == QUEUED:
        done = _transition(app, job.id, [Job.status == QUEUED],
                           status=CANCELLED, message="cancelled before it started", finished_at=now,
                           cancel_requested_at=now)
        if done is not None:
            return done
        job = db.session.get(Job, job.id, populate_existing=True) or job  # it started meanwhile
    if job.status == RUNNING:
        if job.cancel_requested_at is not None:
            return job
        done = _transition(app, job.id, [Job.status == RUNNING, Job.cancel_requested_at.is_(None)],
                           cancel_requested_at=now)
        return done or db.session.get(Job, job.id, populate_existing=True) or job
    raise Conflict(f"The job has already {job.status}.", code="JOB_FINISHED", details={"status": job.status})


def snapshot(job: Job) -> dict[str, Any]:
    """The job as the API shows it (also the data of `status` events)."""
    from .jobs_api import JobSchema

    return JobSchema().dump(job)


def is_terminal_event(event: str, data: Any) -> bool:
    return event == "status" and isinstance(data, dict) and data.get("status") in TERMINAL


def _transition(app: Flask, job_id: str, where: list[Any], **values: Any) -> Job | None:
    """Compare-and-set one row; on success bump `seq`, commit and publish the new snapshot."""
    values.setdefault("updated_at", utcnow())
    statement = (
        sa.update(Job)
        .where(Job.id == job_id, *where)
        .values(seq=Job.seq + 1, **values)
        .returning(Job)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    try:
        job = db.session.scalars(statement).first()
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    if job is not None:
        sse.publish(f"job:{job.id}", "status", snapshot(job), id=job.seq, app=app)
    return job


# ---------------------------------------------------------------------------------------------
# Running a job


def _dispatch(app: Flask, job: Job, attempt: int) -> None:
    """Hand attempt `attempt` of `job` to RQ or to this process's pool."""
    client = redis_client.client(app)
    if client is None:
        _runtime(app).submit(job.id, attempt)
        return
    from rq import Callback, Queue

    from . import job_reaper
    from rq.serializers import JSONSerializer

    queue = Queue(app.config["JOBS_QUEUE"], connection=client, serializer=JSONSerializer)
    timeout = int(job.timeout or app.config["JOBS_DEFAULT_TIMEOUT"])
    queue.enqueue_call(
        "app.tasks.execute",
        args=(job.id, attempt),
        # One RQ job per attempt: RQ's bookkeeping of a dead attempt must never touch the next one.
        job_id=f"{job.id}-{attempt}-{os.urandom(3).hex()}",
        timeout=timeout,
        result_ttl=RQ_RESULT_TTL,
        failure_ttl=RQ_FAILURE_TTL,
        description=f"{job.kind} {job.id} attempt {attempt}",
        on_failure=Callback(job_reaper.on_rq_failure),
    )


def execute(job_id: str, attempt: int) -> None:
    """RQ entry point (runs inside `flask worker`, which provides the app)."""
    if not has_app_context():
        raise RuntimeError("LunaOS jobs need the app: run workers with `flask worker`, not `rq worker`")
    _run(current_app._get_current_object(), job_id, int(attempt))  # type: ignore[attr-defined]


def _run(app: Flask, job_id: str, attempt: int) -> None:
    """Run one attempt of one job in its own app context (and so its own database session)."""
    with app.app_context():
        runtime = _runtime(app)
        try:
            now = utcnow()
            job = _transition(app, job_id, [Job.status == QUEUED, Job.attempts == attempt - 1],
                              status=RUNNING, attempts=attempt, started_at=now, heartbeat_at=now)
        except Exception:
            runtime.disown(job_id)
            raise
        if job is None:
            runtime.disown(job_id)
            log.info("job %s attempt %d skipped: no longer queued for it", job_id, attempt)
            return
        timeout = job.timeout or int(app.config["JOBS_DEFAULT_TIMEOUT"])
        ctx = JobContext(app, job, attempt, deadline=time.monotonic() + timeout)
        function = _registry.get(job.kind)
        payload = dict(job.payload or {})
        db.session.remove()
        runtime.track(ctx)
        runtime.disown(job_id)  # only now: the process holds the job at every moment until it is done
        outcome: tuple[str, Any] = ("succeeded", None)
        try:
            if function is None:
                raise JobError(f"unknown job kind {job.kind!r} (is the plugin that defines it enabled on the worker?)")
            result = function(ctx, **payload)
            try:
                json.dumps(result)  # fail here, with a message, rather than when the row is written
            except (TypeError, ValueError) as error:
                raise JobError(f"the job's result is not JSON-serialisable ({error})") from None
            outcome = ("succeeded", result)
        except JobCancelled:
            outcome = ("cancelled", None)
        except Exception as error:  # the job's own failure; BaseException (worker shutdown) is left to the reaper
            outcome = ("error", error)
        finally:
            db.session.remove()  # drops anything the job left uncommitted before we write the outcome
        try:
            _finish(app, ctx, job, outcome, timeout)
        finally:
            runtime.untrack(ctx)


def _finish(app: Flask, ctx: JobContext, job: Job, outcome: tuple[str, Any], timeout: int) -> None:
    from rq.timeouts import JobTimeoutException

    kind, value = outcome
    if ctx.lost:
        log.warning("job %s attempt %d finished after it was taken over; its outcome is discarded",
                    job.id, ctx.attempt)
        return
    if ctx.timed_out or isinstance(value, JobTimeoutException):
        kind, value = "error", JobError(f"timed out after {timeout} seconds")
    elif ctx.cancel_seen:
        kind = "cancelled"  # it was told to stop; whatever it returned or raised, it stopped
    this_attempt = [Job.status == RUNNING, Job.attempts == ctx.attempt]
    now = utcnow()
    with ctx.write_lock:  # after any progress write in flight, so the final status is the last event
        pending = ctx.take_pending()
        progress = {"progress": pending[0], "message": pending[1]} if pending else {}
        if kind == "succeeded":
            _transition(app, job.id, this_attempt, status=SUCCEEDED, result=value, progress=100.0, error=None,
                        message=progress.get("message", ctx.message), finished_at=now)
        elif kind == "cancelled":
            _transition(app, job.id, this_attempt, status=CANCELLED, finished_at=now, **progress)
        else:
            if isinstance(value, JobError):
                log.info("job %s (%s) attempt %d failed: %s", job.id, job.kind, ctx.attempt, value)
            else:  # the traceback stays in the server log; the owner sees describe()'s message
                log.error("job %s (%s) attempt %d failed", job.id, job.kind, ctx.attempt, exc_info=value)
            _fail_or_retry(app, job.id, ctx.attempt, describe(value), extra=progress)


def _fail_or_retry(app: Flask, job_id: str, attempt: int, reason: str,
                   extra: dict[str, Any] | None = None) -> str | None:
    """The one retry rule: attempt N may be followed by another while N <= max_retries and no cancel was asked."""
    now = utcnow()
    this_attempt = [Job.id == job_id, Job.status == RUNNING, Job.attempts == attempt]
    requeued = _transition(app, job_id, [*this_attempt, Job.attempts <= Job.max_retries,
                                         Job.cancel_requested_at.is_(None)],
                           status=QUEUED, error=reason, heartbeat_at=now, **(extra or {}))
    if requeued is not None:
        return "requeued" if _redispatch(app, requeued, attempt + 1) else "failed"
    done = _transition(app, job_id, [*this_attempt, Job.cancel_requested_at.is_not(None)],
                       status=CANCELLED, error=reason, finished_at=now, **(extra or {}))
    if done is not None:
        return "cancelled"
    failed = _transition(app, job_id, this_attempt, status=FAILED, error=reason, finished_at=now, **(extra or {}))
    return "failed" if failed is not None else None


def _redispatch(app: Flask, job: Job, attempt: int) -> bool:
    """Dispatch a row already put back to `queued`; if the queue is unreachable, fail it rather than strand it."""
    try:
        _dispatch(app, job, attempt)
        return True
    except Exception:
        log.exception("could not re-queue job %s", job.id)
        _transition(app, job.id, [Job.status == QUEUED, Job.attempts == attempt - 1], status=FAILED,
                    error=f"{job.error or 'failed'}; could not be re-queued: the job queue is unavailable",
                    finished_at=utcnow())
        return False


def describe(error: BaseException) -> str:
    """A message for the job's owner: no traceback, secrets redacted, bounded length."""
    if isinstance(error, JobError):
        text = str(error) or "the job failed"
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return logs.redact_text(text)[:1000]


# ---------------------------------------------------------------------------------------------
# Per-process runtime: the in-process pool, heartbeats, progress flushing, in-process reaping


class _Pool:
    """A bounded pool of daemon threads (greenlets under gevent) that exit when idle.

    Daemon threads, unlike concurrent.futures', never hold a process (a CLI command,
    a test run) open at exit; a job cut short that way is left to the reaper.
    """

    def __init__(self, size: int, name: str):
        self._size = max(1, size)
        self._name = name
        self._queue: queue_lib.Queue[tuple[Callable[..., None], tuple[Any, ...]]] = queue_lib.Queue()
        self._lock = threading.Lock()
        self._threads = 0
        self._busy = 0
        self._waiting = 0

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._waiting += 1
            self._queue.put((fn, args))
            if self._threads - self._busy < self._waiting and self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                fn, args = self._queue.get(timeout=_POOL_IDLE_SECONDS)
            except queue_lib.Empty:
                with self._lock:
                    if self._waiting == 0:
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._waiting -= 1
                self._busy += 1
            try:
                fn(*args)
            except Exception:
                log.exception("in-process job runner failed")
            finally:
                with self._lock:
                    self._busy -= 1


class _Runtime:
    """This process's part in the jobs of one app."""

    def __init__(self, app: Flask):
        self.app = app
        self.pid = current_pid()
        self._lock = threading.Condition()
        self._queued: set[str] = set()  # in-process: queued here, waiting for a pool thread
        self._active: dict[str, JobContext] = {}  # running in this process
        self._thread: threading.Thread | None = None
        self._pool: _Pool | None = None
        self.last_reap = float("-inf")
        self._last_heartbeat = time.monotonic()
        self._wake = False

    # bookkeeping -----------------------------------------------------------------------------
    def submit(self, job_id: str, attempt: int) -> None:
        with self._lock:
            self._queued.add(job_id)
            if self._pool is None:
                self._pool = _Pool(int(self.app.config["JOBS_INPROCESS_THREADS"]), "lunaos-job")
        self._pool.submit(_run, self.app, job_id, attempt)
        self._ensure_thread()

    def disown(self, job_id: str) -> None:
        with self._lock:
            self._queued.discard(job_id)
            self._lock.notify_all()

    def track(self, ctx: JobContext) -> None:
        with self._lock:
            self._active[ctx.job_id] = ctx
        self._ensure_thread()

    def untrack(self, ctx: JobContext) -> None:
        with self._lock:
            self._active.pop(ctx.job_id, None)
            self._lock.notify_all()

    def wake(self) -> None:
        with self._lock:
            self._wake = True
            self._lock.notify_all()

    def idle(self) -> bool:
        with self._lock:
            return not self._queued and not self._active

    def wait_idle(self, timeout: float) -> bool:
        """Wait until this process runs and holds no job (tests, graceful shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queued or self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def poke(self) -> None:
        """In-process mode: make sure stale jobs get reaped even when this process runs none."""
        if time.monotonic() - self.last_reap >= float(self.app.config["JOBS_REAP_INTERVAL"]):
            self._ensure_thread()

    # the background thread ---------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lunaos-jobs", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        from . import job_reaper  # it imports this module

        config = self.app.config
        in_process = not config.get("REDIS_URL")
        with self.app.app_context():
            while True:
                if in_process and time.monotonic() - self.last_reap >= float(config["JOBS_REAP_INTERVAL"]):
                    self._safely(job_reaper.reap, self.app)
                self._safely(self._flush_progress)
                if time.monotonic() - self._last_heartbeat >= float(config["JOBS_HEARTBEAT_SECONDS"]):
                    self._last_heartbeat = time.monotonic()
                    self._safely(self._heartbeat)
                with self._lock:
                    if not self._queued and not self._active:
                        self._thread = None
                        return
                    if not self._wake:
                        self._lock.wait(min(float(config["JOBS_PROGRESS_INTERVAL"]),
                                            float(config["JOBS_HEARTBEAT_SECONDS"])))
                    self._wake = False

    def _safely(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except sa.exc.DBAPIError as error:  # database down or not migrated yet: try again next round
            log.warning("jobs maintenance step %s skipped: %s", getattr(fn, "__name__", fn),
                        str(error.orig).splitlines()[0] if error.orig else error)
        except Exception:
            log.exception("jobs maintenance step %s failed", getattr(fn, "__name__", fn))
        finally:
            db.session.remove()

    def _heartbeat(self) -> None:
        with self._lock:
            ids = list(self._queued | set(self._active))
        if not ids:
            return
        db.session.execute(
            sa.update(Job).where(Job.id.in_(ids), Job.status.in_(ACTIVE)).values(heartbeat_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
        db.session.commit()

    def _flush_progress(self) -> None:
        interval = float(self.app.config["JOBS_PROGRESS_INTERVAL"])
        with self._lock:
            due = [c for c in self._active.values() if time.monotonic() - c.last_flush >= interval]
        for ctx in due:
            with ctx.write_lock:
                pending = ctx.take_pending()
                if pending is None:
                    continue
                ctx.last_flush = time.monotonic()
                now = utcnow()
                row = db.session.execute(
                    sa.update(Job)
                    .where(Job.id == ctx.job_id, Job.status == RUNNING, Job.attempts == ctx.attempt)
                    .values(progress=pending[0], message=pending[1], heartbeat_at=now, updated_at=now,
                            seq=Job.seq + 1)
                    .returning(Job.seq, Job.cancel_requested_at),
                    execution_options={"synchronize_session": False},
                ).first()
                db.session.commit()
                if row is None:
                    ctx.lost = ctx.cancel_seen = True
                    continue
                if row.cancel_requested_at is not None:
                    ctx.cancel_seen = True
                sse.publish(ctx.channel, "progress",
                            {"job_id": ctx.job_id, "status": RUNNING, "progress": pending[0], "message": pending[1]},
                            id=row.seq, app=self.app)


_runtimes_lock = threading.Lock()


def _runtime(app: Flask) -> _Runtime:
    runtime = app.extensions.get("lunaos.jobs")
    if runtime is None or runtime.pid != current_pid():  # nothing of a parent's runtime survives a fork
        with _runtimes_lock:
            runtime = app.extensions.get("lunaos.jobs")
            if runtime is None or runtime.pid != current_pid():
                runtime = app.extensions["lunaos.jobs"] = _Runtime(app)
    return runtime


def wait_idle(app: Flask | None = None, timeout: float = 30.0) -> bool:
    """Block until this process has no queued or running job of `app` (in-process mode)."""
    return _runtime(app or current_app._get_current_object()).wait_idle(timeout)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Health and wiring


def _queue_health() -> dict[str, Any]:
    client = redis_client.client()
    if client is None:
        return {"status": "ok", "detail": "in-process"}
    from rq.worker_registration import WORKERS_BY_QUEUE_KEY

    keys = list(client.smembers(WORKERS_BY_QUEUE_KEY % current_app.config["JOBS_QUEUE"]))
    alive = 0
    if keys:
        # Registrations outlive a killed worker until RQ's cleanup; count the ones still heart-beating.
        with client.pipeline() as pipe:
            for key in keys:
                pipe.exists(key)
            alive = sum(pipe.execute())
    if alive == 0:
        return {"status": "degraded", "detail": "no workers", "workers": 0}
    return {"status": "ok", "detail": f"{alive} worker{'s' if alive != 1 else ''}", "workers": alive}


def _check_config(app: Flask) -> None:
    numbers = {}
    for key in TIMING_SETTINGS:
        try:
            numbers[key] = float(app.config[key])
        except (TypeError, ValueError):
            raise ConfigError(f"LUNAOS_{key}: expected a number, got {app.config[key]!r}") from None
        if numbers[key] <= 0:
            raise ConfigError(f"LUNAOS_{key}: must be greater than 0")
    beat = numbers["JOBS_HEARTBEAT_SECONDS"]
    for key in ("JOBS_ABANDONED_AFTER", "JOBS_STALE_AFTER"):
        if numbers[key] < 2 * beat:
            raise ConfigError(f"LUNAOS_{key} ({numbers[key]:g}) must be at least twice LUNAOS_JOBS_HEARTBEAT_SECONDS "
                              f"({beat:g}), or live jobs would be reaped")


def _poke() -> None:
    _runtime(current_app._get_current_object()).poke()  # type: ignore[attr-defined]


def init_app(app: Flask) -> None:
    from . import jobs_api, openapi
    from .job_worker import jobs_cli, worker_command

    _check_config(app)
    health.register(app, "queue", _queue_health)
    openapi.register_blueprint(app, jobs_api.blp)
    app.cli.add_command(worker_command)
    app.cli.add_command(jobs_cli)
    if not app.config.get("REDIS_URL"):
        # In-process mode has no worker maintenance: the serving process reaps (in the background).
        app.before_request(_poke)


_REAPER_NAMES = ("reap", "on_rq_failure", "ReapReport")


def __getattr__(name: str) -> Any:
    # The reaper lives in app/job_reaper.py (it imports this module); `tasks.reap` and the RQ
    # callback path `app.tasks.on_rq_failure` of jobs queued by earlier releases still resolve.
    if name in _REAPER_NAMES:
        from . import job_reaper

        return getattr(job_reaper, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
