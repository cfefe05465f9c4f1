"""Starting an execution from a request and answering it: an SSE stream, or the finished record.

The request subscribes to the execution's channel before the job is queued,
so it sees every event. With `stream: true` it waits for the first token (or
the end) before answering: a run that fails before producing anything (no
model configured, upstream down, unknown model) is answered with the error
envelope and its HTTP status, not a 200 stream holding an error event.
"""
from __future__ import annotations

from typing import Any

from flask import Response, current_app

from app import llm
from app.errors import NotFound
from app.extensions import db
from app.ids import new_id
from app.security import Principal

from . import executions
from .models import Execution


def require_model() -> None:
    if not llm.available():
        raise llm.LLMUnavailable()


def start(principal: Principal, *, stream: bool, **fields: Any) -> Response | tuple[Execution, int]:
    config = current_app.config
    execution_id = new_id("exe")
    broker, sub = executions.subscribe(execution_id)
    try:
        executions.create(principal, execution_id=execution_id, **fields)
        if stream:
            first = executions.first_output(sub, float(config["AGENTS_FIRST_EVENT_WAIT_SECONDS"]))
            if first is not None and first.event == "error" and not (first.data or {}).get("tokens_streamed"):
                raise executions.error_for(first.data or {}, execution_id)
        else:
            executions.wait_finished(execution_id, sub, float(config["AGENTS_SYNC_WAIT_SECONDS"]))
    finally:
        broker.unsubscribe(sub)
    if stream:
        return executions.event_stream(execution_id, last_event_id="0")
    execution = db.session.get(Execution, execution_id, populate_existing=True)
    if execution is None:  # its owner was deleted meanwhile
        raise NotFound("No such execution.")
    if execution.status == executions.WAITING_INPUT:  # as settled as it gets until someone answers
        return execution, 200
    if execution.status not in executions.FINISHED:
        return execution, 202
    error = execution.error or {}
    if execution.status in (executions.FAILED, executions.TIMED_OUT) and not error.get("tokens_streamed"):
        raise executions.error_for(error, execution_id)
    return execution, 200
