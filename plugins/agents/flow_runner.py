"""Running a flow: a scheduler over the graph, nodes in threads, one step record and node-run row per node.

Which nodes run
    A node is ready once every node with an edge into it has settled (ran, failed past its
    on_error, or was skipped). It runs when at least one incoming edge is live: the source
    produced an output and, for a condition, the edge's label matches its result; a node that
    failed with on_error "branch" makes only its edges labelled `error` live (and those only
    then). Its `{previous}` is the output of its live sources in graph order, joined by a blank
    line. A ready node with no live edge is recorded as `skipped`.

Concurrency
    Ready nodes start at once, each in its own thread with its own app context (so its own
    database session), at most AGENTS_FLOW_CONCURRENCY at a time. This thread, the coordinator,
    decides what starts and writes `started`/`skipped`/`waiting` steps in graph order before any
    node thread begins, so those events come in a stable order; `finished` events of nodes running
    side by side come in the order they finish (every event names its node).

Failures, per node
    `max_retries` retries of transient failures (a model or search upstream, NODE_TIMEOUT) for
    model, agent and search nodes, waiting `backoff` seconds (default 0.5) times 2**(retry-1), at
    most 30 s; `timeout` bounds each attempt (the attempt is abandoned: a model call stops at its
    next token, other work is left to finish unheard); then `on_error`: fail (the run fails),
    continue (`default` stands in for the output) or branch (the error message is the output and
    the run follows the node's `error` edges).

Limits, per execution
    AGENTS_FLOW_MAX_STEPS node attempts (retries included): past it the run fails with
    FLOW_STEP_LIMIT. AGENTS_FLOW_MAX_SECONDS of running, summed over the segments of a run that
    paused (time spent waiting for a person does not count): past it the run ends `timed_out`
    (code TIMED_OUT). Each segment is also one job, bounded by AGENTS_EXECUTION_TIMEOUT.

Pausing
    A `human_input` node that is ready and has no input yet waits. When nothing else can run, the
    run stores its state on the execution (outputs, settled nodes, routes, counters), sets
    `waiting_input` and the job ends. `resume` adds the person's input to that state and queues a
    job; that job starts here again, runs none of the settled nodes, and the input becomes the
    human_input node's output.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app import llm
from app.errors import ApiError
from app.extensions import db
from app.ids import utcnow

from . import executions
from .flow_nodes import NODE_KINDS, NodeResult, NodeScope, human_prompt
from .generation import Stopped
from .models import Execution, FlowVersion, NodeRun
from .runtime import Run, clip

log = logging.getLogger("lunaos.agents")
RETRY_BACKOFF_SECONDS = 0.5  # base of the exponential backoff when a node sets no `backoff`
RETRY_BACKOFF_MAX = 30.0
POLL_SECONDS = 0.05  # how often waiting threads look at cancellation, timeouts and limits
ERROR_ROUTE = "error"


class Paused:
    """What `run_flow` returns when the run waits for input (the job then ends without finishing it)."""


PAUSED = Paused()


class NodeTimeout(ApiError):
    status, code = 504, "NODE_TIMEOUT"


def step_records(nodes: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    by_id = {node["id"]: node for node in nodes}
    return [{"index": index, "node_id": node_id, "type": by_id[node_id]["type"],
             "name": by_id[node_id].get("name") or node_id, "status": "pending"}
            for index, node_id in enumerate(order)]


def _transient(error: Exception) -> bool:
    return isinstance(error, llm.ProviderError | llm.LLMUpstreamError | llm.LLMUnavailable | NodeTimeout)


def _message(error: Exception) -> str:
    """What a failed node's record says: our own errors in full, anything else only by kind (it is logged)."""
    if isinstance(error, ApiError):
        return f"{error.code}: {error.message}"
    if isinstance(error, llm.ProviderError):
        return f"LLM_UPSTREAM_ERROR: the model failed: {error}"
    if isinstance(error, LookupError):
        return str(error)
    log.error("flow node failed", exc_info=error)
    return f"INTERNAL_ERROR: unexpected {type(error).__name__} (see the server log)"


@dataclass
class Outcome:
    node_id: str
    text: str = ""
    route: Any = None  # a condition's True/False, ERROR_ROUTE after on_error "branch", else None
    fatal: BaseException | None = None  # ends the run
    stopped: bool = False  # gave up because the run is stopping


@dataclass
class Launch:
    """One node started in this segment."""

    node: dict[str, Any]
    index: int
    previous: str
    outputs: dict[str, str]  # a snapshot: the coordinator goes on changing its own
    record_id: str = ""
    started: float = field(default_factory=time.monotonic)
    abandoned: threading.Event = field(default_factory=threading.Event)  # its writes are no longer wanted
    done: bool = False  # its final step and record were written

    @property
    def id(self) -> str:
        return self.node["id"]


class FlowRun:
    def __init__(self, run: Run, execution: Execution):
        version = db.session.get(FlowVersion, (execution.target_id, execution.flow_version))
        if version is None:
            raise ApiError("The flow was deleted before the execution started.", status=404, code="NOT_FOUND")
        config = current_app.config
        self.run = run
        self.nodes = {node["id"]: node for node in version.nodes}
        self.order = [step["node_id"] for step in run.steps]  # the steps are in topological order
        self.position = {node_id: index for index, node_id in enumerate(self.order)}
        self.incoming: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for edge in version.edges:
            self.incoming[edge["target"]].append(edge)
        state = execution.state or {}
        self.outputs: dict[str, str] = dict(state.get("outputs") or {})
        self.routes: dict[str, Any] = dict(state.get("routes") or {})
        self.settled: set[str] = set(state.get("settled") or [])
        self.inputs: dict[str, Any] = dict(state.get("inputs") or {})  # human_input node id -> the person's input
        self.records: dict[str, str] = dict(state.get("records") or {})  # waiting node id -> its NodeRun id
        self.pauses = int(state.get("pauses") or 0)
        self.node_runs = int(state.get("node_runs") or 0)
        self.seconds = float(state.get("seconds") or 0.0)
        self.max_steps = int(config["AGENTS_FLOW_MAX_STEPS"])
        self.max_seconds = float(config["AGENTS_FLOW_MAX_SECONDS"])
        self.concurrency = max(1, int(config["AGENTS_FLOW_CONCURRENCY"]))
        self.started = time.monotonic()
        self.results: queue.Queue[Outcome] = queue.Queue()
        self.in_flight: dict[str, Launch] = {}
        self.waiting: dict[str, str] = {}  # human_input node id -> its prompt, in graph order
        self.aborted = threading.Event()

    # --- the coordinator ----------------------------------------------------------------------

    def execute(self) -> str | Paused:
        try:
            while True:
                self._check_limits()
                for launch in self._schedule():
                    threading.Thread(target=self._work, args=(launch,), daemon=True,
                                     name=f"flow-{self.run.id}-{launch.id}").start()
                if not self.in_flight:
                    if self.waiting:
                        return self._pause()
                    break
                try:
                    outcome = self.results.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                self._absorb(outcome)
        except BaseException:
            self._abandon()
            raise
        return "\n\n".join(self.outputs[node_id] for node_id in self.order
                           if self.nodes[node_id]["type"] == "output" and node_id in self.outputs)

    def elapsed(self) -> float:
        return self.seconds + time.monotonic() - self.started

    def _check_limits(self) -> None:
        self.run.check_stop()
        if self.elapsed() > self.max_seconds:
            raise ApiError(f"The flow ran longer than AGENTS_FLOW_MAX_SECONDS ({self.max_seconds:g} s).",
                           status=504, code="TIMED_OUT", details={"limit": "AGENTS_FLOW_MAX_SECONDS"})

    def _live_sources(self, node_id: str) -> list[str]:
        live = []
        for edge in self.incoming[node_id]:
            source, label = edge["source"], edge.get("label")
            if source not in self.outputs:
                continue
            route = self.routes.get(source)
            if route == ERROR_ROUTE:
                ok = label == ERROR_ROUTE
            elif label == ERROR_ROUTE:
                ok = False
            elif isinstance(route, bool):
                ok = label == str(route).lower()
            else:
                ok = True
            if ok:
                live.append(source)
        return sorted(dict.fromkeys(live), key=self.position.__getitem__)

    def _schedule(self) -> list[Launch]:
        """Settle what can be settled now (skips, answered human_input nodes) and pick the nodes to start."""
        launches: list[Launch] = []
        changed = True
        while changed:
            changed = False
            for node_id in self.order:
                if node_id in self.settled or node_id in self.in_flight or node_id in self.waiting:
                    continue
                if any(edge["source"] not in self.settled for edge in self.incoming[node_id]):
                    continue
                node, index = self.nodes[node_id], self.position[node_id]
                live = self._live_sources(node_id)
                if node["type"] != "input" and not live:
                    self.run.step_finished(index, status="skipped")
                    self.settled.add(node_id)
                    changed = True
                    continue
                kind = NODE_KINDS[node["type"]]
                launch = Launch(node=node, index=index, previous="\n\n".join(self.outputs[s] for s in live),
                                outputs=dict(self.outputs))
                if kind.pauses:
                    changed |= self._human(launch)
                    continue
                if len(self.in_flight) >= self.concurrency:
                    continue
                self._start(launch)
                launches.append(launch)
        return launches

    def _start(self, launch: Launch) -> None:
        with self.run.lock:
            launch.record_id = _new_record(self.run.id, launch, "running")
            self.run.step_started(launch.index)
        self.in_flight[launch.id] = launch

    def _human(self, launch: Launch) -> bool:
        """A ready human_input node: settled with its input if it has one (True), else it waits."""
        scope = self._scope(launch, None)
        if launch.id not in self.inputs:
            self.waiting[launch.id] = human_prompt(scope)
            if launch.id not in self.records:  # reached for the first time (not waiting since an earlier pause)
                with self.run.lock:
                    self.records[launch.id] = _new_record(self.run.id, launch, "waiting")
                    self.run.step_started(launch.index, status="waiting", prompt=self.waiting[launch.id])
            return False
        scope.reply = self.inputs[launch.id]
        result = NODE_KINDS[launch.node["type"]].run(scope)
        with self.run.lock:
            record_id = self.records.pop(launch.id, None) or _new_record(self.run.id, launch, "running")
            record = db.session.get(NodeRun, record_id)
            waited = (utcnow() - record.started_at).total_seconds() if record is not None else 0.0
            _finish_record(record_id, "succeeded", attempts=1, output=result.text, duration=waited)
            self.run.step_finished(launch.index, output=result.text, attempts=1)
        self.outputs[launch.id] = result.text
        self.settled.add(launch.id)
        return True

    def _absorb(self, outcome: Outcome) -> None:
        self.in_flight.pop(outcome.node_id, None)
        if outcome.fatal is not None:
            raise outcome.fatal
        if outcome.stopped:
            self.run.check_stop()
            raise Stopped()
        self.outputs[outcome.node_id] = outcome.text
        if outcome.route is not None:
            self.routes[outcome.node_id] = outcome.route
        self.settled.add(outcome.node_id)

    def _state(self, waiting: dict[str, Any] | None) -> dict[str, Any]:
        return {"outputs": self.outputs, "routes": self.routes, "settled": sorted(self.settled, key=self.position.get),
                "inputs": self.inputs, "records": self.records, "pauses": self.pauses, "node_runs": self.node_runs,
                "seconds": round(self.elapsed(), 3), "waiting": waiting}

    def _pause(self) -> Paused:
        node_id, prompt = next(iter(self.waiting.items()))
        self.pauses += 1
        waiting = {"node_id": node_id, "prompt": prompt, "pause": self.pauses, "index": self.position[node_id]}
        run = self.run
        with run.lock:
            run.flush()
            paused = executions.pause(run.app, run.id, waiting, state=self._state(waiting), steps=run._snapshot(),
                                      usage=dict(run.usage), model=run.model, provider=run.provider)
        if not paused:  # asked to cancel (or deleted) just now: end as cancelled rather than wait
            raise Stopped()
        return PAUSED

    def _abandon(self) -> None:
        """The run ends early: nodes still running are told to stop and recorded as cancelled."""
        self.aborted.set()
        try:
            db.session.rollback()
            with self.run.lock:
                for launch in self.in_flight.values():
                    if launch.done:
                        continue
                    launch.abandoned.set()
                    _finish_record(launch.record_id, "cancelled", duration=time.monotonic() - launch.started)
                    self.run.steps[launch.index].update(status="cancelled")
                for node_id in self.waiting:  # reached, but the run ends before anyone could answer
                    if node_id in self.records:
                        _finish_record(self.records[node_id], "cancelled")
                    self.run.steps[self.position[node_id]].update(status="cancelled")
        except Exception:  # the run's own error is what gets reported
            db.session.rollback()
            log.exception("flow %s: recording the nodes cut short failed", self.run.id)

    # --- in a node's thread -------------------------------------------------------------------

    def _work(self, launch: Launch) -> None:
        with self.run.app.app_context():
            try:
                outcome = self._execute(launch)
            except BaseException as error:  # noqa: BLE001 - handed to the coordinator, which ends the run
                outcome = Outcome(launch.id, fatal=error)
            finally:
                db.session.remove()
        self.results.put(outcome)

    def _write(self, launch: Launch, status: str, *, attempts: int, output: str | None = None,
               error: str | None = None, usage: llm.Usage | None = None, **step: Any) -> None:
        with self.run.lock:
            if launch.abandoned.is_set():
                return
            duration = time.monotonic() - launch.started
            _finish_record(launch.record_id, status, attempts=attempts, output=output, error=error, usage=usage,
                           duration=duration)
            if error is not None:
                step["error"] = error
            self.run.step_finished(launch.index, status=status, output=output, usage=usage, attempts=attempts,
                                   **step)
            launch.done = True

    def _take_step(self) -> None:
        with self.run.lock:
            self.node_runs += 1
            if self.node_runs > self.max_steps:
                raise ApiError(f"The flow needed more than AGENTS_FLOW_MAX_STEPS ({self.max_steps}) node runs.",
                               status=422, code="FLOW_STEP_LIMIT", details={"limit": "AGENTS_FLOW_MAX_STEPS"})

    def _stopping(self, launch: Launch) -> bool:
        return launch.abandoned.is_set() or self.aborted.is_set() or self.run.stop_requested()

    def _scope(self, launch: Launch, attempt_over: threading.Event | None) -> NodeScope:
        def should_stop() -> bool:
            return (attempt_over is not None and attempt_over.is_set()) or self._stopping(launch)

        return NodeScope(run=self.run, node=launch.node, index=launch.index, previous=launch.previous,
                         outputs=launch.outputs, should_stop=should_stop)

    def _execute(self, launch: Launch) -> Outcome:
        node = launch.node
        kind = NODE_KINDS[node["type"]]
        retries = int(node.get("max_retries") or 0) if kind.retryable else 0
        backoff = float(node["backoff"]) if node.get("backoff") is not None else RETRY_BACKOFF_SECONDS
        timeout = float(node["timeout"]) if node.get("timeout") is not None else None
        attempts = 0
        while True:
            try:
                self._take_step()
            except ApiError as error:
                self._write(launch, "failed", attempts=attempts, error=_message(error))
                return Outcome(launch.id, fatal=error)
            attempts += 1
            try:
                result = self._attempt(launch, timeout)
                break
            except Stopped:
                return Outcome(launch.id, stopped=True)
            except Exception as error:
                if attempts > retries or not _transient(error):
                    return self._failed(launch, error, attempts)
                delay = min(backoff * 2 ** (attempts - 1), RETRY_BACKOFF_MAX)
                with self.run.lock:
                    if not launch.abandoned.is_set():
                        self.run.emit("step", {"index": launch.index, "node_id": launch.id, "type": node["type"],
                                               "status": "retrying", "attempt": attempts,
                                               "error": _message(error), "delay": delay})
                if not self._sleep(launch, delay):
                    return Outcome(launch.id, stopped=True)
        self._write(launch, "succeeded", attempts=attempts, output=result.text, usage=result.usage, **result.details)
        return Outcome(launch.id, text=result.text, route=result.branch)

    def _sleep(self, launch: Launch, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping(launch):
                return False
            time.sleep(min(POLL_SECONDS, left))
        return True

    def _attempt(self, launch: Launch, timeout: float | None) -> NodeResult:
        kind = NODE_KINDS[launch.node["type"]]
        if timeout is None:
            return kind.run(self._scope(launch, None))
        over = threading.Event()
        scope = self._scope(launch, over)
        box: dict[str, Any] = {}

        def attempt() -> None:
            with self.run.app.app_context():
                try:
                    box["result"] = kind.run(scope)
                except BaseException as error:  # noqa: BLE001 - re-raised in the node's thread
                    box["error"] = error

        thread = threading.Thread(target=attempt, daemon=True, name=f"flow-{self.run.id}-{launch.id}-attempt")
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive() and (left := deadline - time.monotonic()) > 0:
            thread.join(min(POLL_SECONDS, left))
            if thread.is_alive() and self._stopping(launch):
                over.set()
                raise Stopped()
        if thread.is_alive():
            over.set()  # a model call stops at its next token; anything else finishes unheard
            raise NodeTimeout(f"Node {launch.id!r} took longer than its timeout of {timeout:g} s.",
                              details={"node_id": launch.id, "timeout": timeout})
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _failed(self, launch: Launch, error: Exception, attempts: int) -> Outcome:
        node = launch.node
        message = _message(error)
        policy = node.get("on_error") or "fail"
        if policy == "continue":  # `default` stands in for the output (a failed condition is false)
            text = node.get("default") or ""
            self._write(launch, "failed", attempts=attempts, output=text, error=message, continued=True)
            return Outcome(launch.id, text=text, route=False if node["type"] == "condition" else None)
        if policy == "branch":  # the message is the output, for the nodes on the `error` edges
            self._write(launch, "failed", attempts=attempts, output=message, error=message, branch=ERROR_ROUTE)
            return Outcome(launch.id, text=message, route=ERROR_ROUTE)
        self._write(launch, "failed", attempts=attempts, error=message)
        return Outcome(launch.id, fatal=error)


# --- node-run records -----------------------------------------------------------------------------

def _new_record(execution_id: str, launch: Launch, status: str) -> str:
    record = NodeRun(execution_id=execution_id, node_id=launch.id, node_type=launch.node["type"], index=launch.index,
                     status=status, attempts=0, input=clip(launch.previous), usage={}, started_at=utcnow())
    db.session.add(record)
    db.session.commit()
    return record.id


def _finish_record(record_id: str, status: str, *, attempts: int | None = None, output: str | None = None,
                   error: str | None = None, usage: llm.Usage | None = None, duration: float = 0.0) -> None:
    values: dict[str, Any] = {"status": status, "output": clip(output), "error": clip(error),
                              "finished_at": utcnow(), "duration_ms": int(duration * 1000)}
    if attempts is not None:
        values["attempts"] = attempts
    if usage is not None:
        values["usage"] = usage.as_dict()
    db.session.execute(sa.update(NodeRun).where(NodeRun.id == record_id).values(**values),
                       execution_options={"synchronize_session": False})
    db.session.commit()


def run_flow(run: Run, execution: Execution) -> str | Paused:
    return FlowRun(run, execution).execute()
