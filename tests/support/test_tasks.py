"""Job kinds used by the tests, importable by the test process and by subprocess servers and workers.

Gates let a test hold a job at a known point without sleeping: a job waits for
its gate, the test asserts what it needs to while the job is provably still
running, then opens the gate. In-process jobs use a `threading.Event`; jobs on
an RQ worker (another process) wait for a Redis key.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import redis

from app.tasks import JobContext, JobError, task

GATE_TIMEOUT = 30.0
_gates: dict[str, threading.Event] = {}
_gates_lock = threading.Lock()


def gate(name: str) -> threading.Event:
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


def _wait(name: str, redis_url: str | None) -> None:
    if redis_url is None:
        if not gate(name).wait(GATE_TIMEOUT):
            raise JobError(f"gate {name} never opened")
        return
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + GATE_TIMEOUT
    while not client.exists(name):
        if time.monotonic() > deadline:
            raise JobError(f"gate {name} never opened")
        time.sleep(0.02)


@task("test.echo")
def echo(ctx: JobContext, value: Any = None, steps: int = 0) -> dict[str, Any]:
    for step in range(steps):
        ctx.progress(100 * step / steps, f"step {step}")
    return {"value": value, "job_id": ctx.job_id, "owner_id": ctx.owner_id}


@task("test.fail")
def fail(ctx: JobContext, message: str = "boom", job_error: bool = False) -> None:
    ctx.progress(40, "about to fail")
    if job_error:
        raise JobError(message)
    raise ValueError(message)


@task("test.gated")
def gated(ctx: JobContext, gate: str, redis_url: str | None = None, fail_before: bool = False) -> dict[str, Any]:
    """progress(10) -> wait for `gate` -> progress(60) -> result (or fail if asked)."""
    ctx.progress(10, "waiting at the gate")
    _wait(gate, redis_url)
    if fail_before:
        raise JobError("failed on purpose after the gate")
    ctx.publish("note", {"text": "through the gate"})
    ctx.progress(60, "through the gate")
    return {"gate": gate, "attempt": ctx.attempt}


@task("test.flaky")
def flaky(ctx: JobContext, fail_attempts: int = 1) -> dict[str, Any]:
    if ctx.attempt <= fail_attempts:
        raise JobError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


@task("test.cancellable")
def cancellable(ctx: JobContext, started_gate: str | None = None, redis_url: str | None = None) -> dict[str, Any]:
    """Works in small steps until told to stop; reports how far it got."""
    done = 0
    ctx.progress(1, "started")
    if started_gate is not None:
        if redis_url is None:
            gate(started_gate).set()
        else:
            redis.Redis.from_url(redis_url).set(started_gate, 1, ex=60)
    deadline = time.monotonic() + GATE_TIMEOUT
    while not ctx.cancelled():
        if time.monotonic() > deadline:
            raise JobError("never cancelled")
        done += 1
        time.sleep(0.01)
    return {"steps": done}


@task("test.spam")
def spam(ctx: JobContext, calls: int = 10000) -> dict[str, Any]:
    for i in range(calls):
        ctx.progress(100 * i / calls)
    return {"calls": calls}


@task("test.not_json")
def not_json(ctx: JobContext) -> Any:
    return {"when": object()}
