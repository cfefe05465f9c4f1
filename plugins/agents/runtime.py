"""What a running execution uses: event emission (tokens batched), model calls, step records, stopping.

A flow may run several nodes at once, each in its own thread (and app context, so its own database
session). Every write of the run's events, steps and usage takes `lock`: the rows are numbered and
committed in the order their events are published, whichever thread writes them.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from flask import current_app

from app import llm
from app.ids import isoformat, utcnow
from app.tasks import JobContext

from . import executions, generation, prompting, service
from .models import Execution

STEP_TEXT_LIMIT = 20_000  # characters of a step's input/output kept in its record and events


def clip(text: Any, limit: int = STEP_TEXT_LIMIT) -> Any:
    if isinstance(text, str) and len(text) > limit:
        return text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


class Run:
    def __init__(self, ctx: JobContext, execution: Execution):
        self.ctx = ctx
        self.app = ctx.app
        self.id = execution.id
        self.owner_id = execution.owner_id
        self.key_id = execution.key_id
        self.input = execution.input
        self.context: dict[str, Any] = dict(execution.context or {})
        self.options: dict[str, Any] = dict(execution.options or {})
        self.steps: list[dict[str, Any]] = [dict(step) for step in execution.steps or []]
        self.usage: dict[str, Any] = dict(execution.usage_totals)  # a resumed flow goes on counting
        self.model: str | None = execution.model
        self.provider: str | None = execution.provider
        self.lock = threading.RLock()
        self.tokens_sent = 0  # token events written: an error before the first one is answered as an envelope
        self.default_max_tokens = int(current_app.config["AGENTS_MAX_TOKENS"])
        self._batch = float(current_app.config["AGENTS_TOKEN_BATCH_SECONDS"])
        self._pending: list[str] = []
        self._pending_extra: dict[str, Any] = {}
        self._last_flush = 0.0

    # --- events ---------------------------------------------------------------------------

    def emit(self, event: str, data: dict[str, Any], **values: Any) -> None:
        with self.lock:
            self.flush()
            executions.append(self.app, self.id, event, data, **values)

    def token(self, delta: str, **extra: Any) -> None:
        """Deltas are batched for AGENTS_TOKEN_BATCH_SECONDS (the first goes out at once): one row per batch."""
        with self.lock:
            if self._pending and extra != self._pending_extra:
                self.flush()
            self._pending.append(delta)
            self._pending_extra = extra
            if time.monotonic() - self._last_flush >= self._batch:
                self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self._pending:
                return
            data = {"delta": "".join(self._pending), **self._pending_extra}
            self._pending = []
            self._last_flush = time.monotonic()
            executions.append(self.app, self.id, "token", data)
            self.tokens_sent += 1

    # --- stopping -------------------------------------------------------------------------

    def stop_requested(self) -> bool:
        return self.ctx.cancelled()

    def check_stop(self) -> None:
        if self.ctx.cancelled():
            raise generation.Stopped()

    # --- model calls ----------------------------------------------------------------------

    def settings(self, agent: Any = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Step overrides, then the request's, then the agent's, then the defaults."""
        merged = {k: v for k, v in self.options.items() if v is not None}
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return service.settings(agent, merged, self.default_max_tokens)

    def generate(self, system: str | None, user: str, settings: dict[str, Any],
                 should_stop: Any = None, **extra: Any) -> generation.Generation:
        """One model call; `should_stop` (default: the run's) also silences its token events once true."""
        stop = should_stop or self.stop_requested
        fitted = prompting.fit(system, [], user, model=settings["model"], max_tokens=settings["max_tokens"])
        result = generation.complete(
            fitted.messages, model=settings["model"], temperature=settings["temperature"],
            max_tokens=fitted.max_tokens, user_id=self.owner_id, key_id=self.key_id,
            on_delta=lambda delta: None if stop() else self.token(delta, **extra), should_stop=stop)
        with self.lock:
            self.flush()
            self.add_usage(result.usage)
            self.model, self.provider = result.model, result.provider
        return result

    def add_usage(self, usage: llm.Usage) -> None:
        with self.lock:
            self.usage = generation.add_usage(self.usage, usage)

    # --- step records ---------------------------------------------------------------------

    def step_started(self, index: int, *, status: str = "running", **info: Any) -> None:
        """`status` "waiting": a human_input node now waits for its input (event status `waiting`)."""
        with self.lock:
            step = self.steps[index]
            step.update(status=status, started_at=isoformat(utcnow()), **info)
            event_status = "started" if status == "running" else status
            self.emit("step", {"index": index, "status": event_status, **self._public(step)},
                      steps=self._snapshot())

    def step_finished(self, index: int, *, status: str = "succeeded", output: Any = None,
                      usage: llm.Usage | None = None, **info: Any) -> None:
        with self.lock:
            step = self.steps[index]
            step.update(status=status, output=clip(output), finished_at=isoformat(utcnow()), **info)
            if usage is not None:
                step["usage"] = usage.as_dict()
            event_status = "finished" if status == "succeeded" else status
            self.emit("step", {"index": index, **self._public(step), "status": event_status},
                      steps=self._snapshot(), usage=dict(self.usage))

    def _snapshot(self) -> list[dict[str, Any]]:
        # A copy: the JSON column must not see the list change under it (another node may be running).
        return [dict(step) for step in self.steps]

    @staticmethod
    def _public(step: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in step.items() if k not in ("started_at", "finished_at", "status")}
