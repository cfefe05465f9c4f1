"""The job that runs an execution (agent, chain or flow) to its end, whoever is listening."""
from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from app import llm
from app.errors import ApiError
from app.extensions import db
from app.ids import utcnow
from app.models import UTCDateTime
from app.tasks import JobCancelled, JobContext, task

from . import chains, executions, flow_runner, generation, prompting, service
from .models import Execution
from .runtime import Run

log = logging.getLogger("lunaos.agents")


def run_agent(run: Run, execution: Execution) -> str:
    agent = service.find_usable(run.owner_id, execution.target_id)
    if agent is None:
        raise ApiError("The agent was deleted before the execution started.", status=404, code="NOT_FOUND")
    settings = run.settings(agent)
    user = prompting.with_context(prompting.as_text(run.input), run.context)
    return run.generate(prompting.system_prompt(agent), user, settings).text


def _runners() -> dict[str, Any]:
    return {"agent": run_agent, "chain": chains.run_chain, "flow": flow_runner.run_flow}


def _claim(execution_id: str) -> Execution | None:
    claimed = db.session.scalar(sa.update(Execution)
                                .where(Execution.id == execution_id, Execution.status == executions.QUEUED)
                                .values(status=executions.RUNNING, updated_at=utcnow(),
                                        # a resumed flow keeps the start of its first segment
                                        started_at=sa.func.coalesce(Execution.started_at,
                                                                    sa.literal(utcnow(), UTCDateTime())))
                                .returning(Execution.id))
    db.session.commit()
    return db.session.get(Execution, execution_id) if claimed else None


def _timed_out(error: BaseException, run: Run) -> bool:
    if run.ctx.timed_out:
        return True
    from rq.timeouts import JobTimeoutException  # raised into the job by RQ's own time limit

    return isinstance(error, JobTimeoutException)


def _error(error: BaseException, run: Run) -> tuple[str, dict[str, Any]]:
    if isinstance(error, generation.Stopped | JobCancelled) or _timed_out(error, run):
        if _timed_out(error, run):
            return executions.TIMED_OUT, {"code": "TIMED_OUT", "status": 504,
                                          "message": "The execution ran out of time (AGENTS_EXECUTION_TIMEOUT)."}
        return executions.CANCELLED, {"code": "CANCELLED", "status": 409, "message": "The execution was cancelled."}
    if isinstance(error, ApiError):
        data = {"code": error.code, "status": error.status, "message": error.message}
        data.update({k: v for k, v in (error.details or {}).items() if k not in data})
        # A flow past AGENTS_FLOW_MAX_SECONDS ends timed out, like a job past its own limit.
        return (executions.TIMED_OUT if error.code == "TIMED_OUT" else executions.FAILED), data
    if isinstance(error, llm.ProviderError):
        return executions.FAILED, {"code": "LLM_UPSTREAM_ERROR", "status": 502,
                                   "message": f"The model failed while answering: {error}"}
    log.error("execution %s failed", run.id, exc_info=error)
    return executions.FAILED, {"code": "INTERNAL_ERROR", "status": 500,
                               "message": "The execution failed unexpectedly; quote its id when reporting it."}


@task(executions.JOB_KIND)
def run_execution(ctx: JobContext, execution_id: str) -> dict[str, Any]:
    execution = _claim(execution_id)
    if execution is None:  # deleted, or already run by an earlier attempt
        return {"execution_id": execution_id, "skipped": True}
    run = Run(ctx, execution)
    finished = dict(steps=run.steps)
    try:
        output = _runners()[execution.kind](run, execution)
        if output is flow_runner.PAUSED:  # waiting_input, its state stored: a resume queues the next job
            return {"execution_id": execution_id, "status": executions.WAITING_INPUT}
        run.flush()
        status, event, data = executions.SUCCEEDED, "done", {"output": output, "usage": run.usage}
        finished.update(output=output, error=None)
    except Exception as error:  # every failure ends the execution with an `error` event, never silently
        db.session.rollback()
        try:
            run.flush()
        except Exception:
            db.session.rollback()
        status, data = _error(error, run)
        event = "error"
        # Whether output was already streamed decides how the request that waits for it reports the failure.
        data["tokens_streamed"] = run.tokens_sent > 0
        finished.update(error=data)
    finished.update(usage=run.usage, model=run.model, provider=run.provider, steps=run.steps)
    executions.finish(ctx.app, execution_id, status=status, event=event, data=data, **finished)
    return {"execution_id": execution_id, "status": status}
