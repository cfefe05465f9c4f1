"""The job that runs a run's steps in order, in the sandbox, stopping at the first failure."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from app.extensions import db
from app.ids import utcnow
from app.tasks import JobContext

from . import runs, sandbox, settings
from .models import ExecutorRun, ExecutorTask

log = logging.getLogger("lunaos.executor")
OUTPUT_BATCH_LINES = 200


class RunRefused(Exception):
    """The run cannot start (sandbox missing, working directory unusable): it fails with this message."""


class _Output:
    """Collects output lines and stores them as `output` events at most every `interval` seconds."""

    def __init__(self, app: Flask, run_id: str, step_id: int, interval: float):
        self.app, self.run_id, self.step_id, self.interval = app, run_id, step_id, interval
        self.pending: dict[str, list[str]] = {}
        self.count = 0
        self.last = time.monotonic()

    def line(self, stream: str, text: str) -> None:
        self.pending.setdefault(stream, []).append(text)
        self.count += 1
        if self.count >= OUTPUT_BATCH_LINES:
            self.flush()

    def tick(self) -> None:
        if self.count and time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        for stream, lines in self.pending.items():
            runs.append(self.app, self.run_id, "output", {"step_id": self.step_id, "stream": stream, "lines": lines})
        self.pending, self.count, self.last = {}, 0, time.monotonic()


def _claim(run_id: str) -> ExecutorRun | None:
    now = utcnow()
    claimed = db.session.execute(sa.update(ExecutorRun)
                                 .where(ExecutorRun.id == run_id, ExecutorRun.status == runs.QUEUED)
                                 .values(status=runs.RUNNING, started_at=now, updated_at=now)
                                 .returning(ExecutorRun.task_id), execution_options={"synchronize_session": False}
                                 ).first()
    if claimed is None:
        db.session.rollback()
        return None
    db.session.execute(sa.update(ExecutorTask).where(ExecutorTask.id == claimed[0], ExecutorTask.last_run_id == run_id)
                       .values(status=runs.RUNNING, updated_at=now))
    db.session.commit()
    return db.session.get(ExecutorRun, run_id, populate_existing=True)


def working_directory(box: sandbox.Sandbox, relative: str) -> Path:
    """The step's directory inside the caller's workspace; created when missing, never outside it
    (a symlink a previous run left there cannot lead out)."""
    root = box.workspace.resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise RunRefused(f"the working directory {relative!r} leads outside your workspace")
    if not path.exists():
        path.mkdir(parents=True, mode=0o755)
        if box.run_as is not None:
            import os

            os.chown(path, *box.run_as)
    if not path.is_dir():
        raise RunRefused(f"the working directory {relative!r} is not a directory")
    return path


def _result(step: dict[str, Any], outcome: sandbox.Outcome, timeout: float) -> dict[str, Any]:
    if outcome.ok:
        status, error = "completed", None
    elif outcome.cancelled:
        status, error = "cancelled", "cancelled"
    elif outcome.timed_out:
        status, error = "failed", f"timed out after {timeout:g} seconds (its processes were killed)"
    else:
        status = "failed"
        code = outcome.exit_code
        error = outcome.stderr.strip() or (f"killed by signal {-code}" if code is not None and code < 0
                                           else f"exited with code {code}")
    return {"step_id": step["id"], "status": status, "output": outcome.stdout, "error": error,
            "stderr": outcome.stderr, "exit_code": outcome.exit_code, "duration_ms": round(outcome.duration_ms, 1),
            "truncated": outcome.stdout_truncated or outcome.stderr_truncated}


def execute(ctx: JobContext, run_id: str) -> dict[str, Any]:
    app = ctx.app
    run = _claim(run_id)
    if run is None:  # deleted, cancelled while queued, or already run by an earlier attempt
        return {"run_id": run_id, "skipped": True}
    results: list[dict[str, Any]] = []
    try:
        if not app.config["EXECUTOR_ENABLED"]:
            raise RunRefused("the executor is disabled (EXECUTOR_ENABLED) where this run was picked up")
        task = db.session.get(ExecutorTask, run.task_id)
        try:
            box = settings.sandbox_for(run.owner_id, app)
        except settings.SandboxUnavailable as error:
            raise RunRefused(error.message) from None
        cwd = working_directory(box, task.cwd if task is not None else ".")
        steps = list(run.steps)
        db.session.rollback()  # no transaction held open while steps run
        stopped = _run_steps(ctx, run_id, steps, box, cwd, results)
        if ctx.timed_out:
            runs.finish(app, run_id, runs.FAILED, results, "the run ran out of time (its job timeout)")
        else:
            runs.finish(app, run_id, runs.overall(results, cancelled=stopped), results)
    except RunRefused as error:
        db.session.rollback()
        runs.finish(app, run_id, runs.FAILED, results, str(error))
    except Exception:
        log.exception("executor run %s failed", run_id)
        db.session.rollback()
        runs.finish(app, run_id, runs.FAILED, results, "the run failed unexpectedly; quote its id when reporting it")
    final = db.session.get(ExecutorRun, run_id, populate_existing=True)
    return {"run_id": run_id, "overall_status": final.status if final is not None else None}


def _running(step: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "step", {"step_id": step["id"], "status": "running", "command": step["command"],
                    "description": step.get("description", "")}


def _run_steps(ctx: JobContext, run_id: str, steps: list[dict[str, Any]], box: sandbox.Sandbox, cwd: Path,
               results: list[dict[str, Any]]) -> bool:
    """Run until the first failure; True when stopped by a cancellation (or the job's timeout).
    One transaction per step: a step's result is stored together with the next step's `running`."""
    app = ctx.app
    interval = float(app.config["EXECUTOR_OUTPUT_FLUSH_SECONDS"])
    if ctx.cancelled():
        return True
    runs.append_many(app, run_id, [_running(steps[0])])
    for index, step in enumerate(steps):
        output = _Output(app, run_id, step["id"], interval)

        def should_stop(output: _Output = output) -> bool:
            output.tick()
            return ctx.cancelled()

        outcome = sandbox.run(step["command"], cwd, box, on_output=output.line, should_stop=should_stop)
        output.flush()
        result = _result(step, outcome, box.limits.timeout)
        results.append(result)
        batch = [("step", {k: v for k, v in result.items() if k not in ("output", "stderr")})]
        going_on = result["status"] == "completed" and index + 1 < len(steps) and not ctx.cancelled()
        if going_on:
            batch.append(_running(steps[index + 1]))
        runs.append_many(app, run_id, batch, results=list(results))
        if outcome.cancelled or (result["status"] == "completed" and not going_on and index + 1 < len(steps)):
            return True  # cancelled during this step, or right after it
        if not going_on:
            return False
    return False
