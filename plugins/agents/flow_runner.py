"""Running a flow: nodes in topological order, one step record and `step` events per node.

A node runs when at least one of its incoming edges is live: the source ran
and, for a condition, the edge's label matches the condition's result. Its
`{previous}` is the output of its live sources (joined by a blank line when
there are several). Nodes on a branch not taken are recorded as `skipped`.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from app import llm
from app.errors import ApiError
from app.extensions import db

from .flow_nodes import NODE_KINDS, NodeResult, NodeScope
from .generation import Stopped
from .models import Execution, FlowVersion
from .runtime import Run

log = logging.getLogger("lunaos.agents")
RETRY_BACKOFF_SECONDS = 0.5
RETRY_BACKOFF_MAX = 8.0


def step_records(nodes: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    by_id = {node["id"]: node for node in nodes}
    return [{"index": index, "node_id": node_id, "type": by_id[node_id]["type"],
             "name": by_id[node_id].get("name") or node_id, "status": "pending"}
            for index, node_id in enumerate(order)]


def _transient(error: Exception) -> bool:
    return isinstance(error, llm.ProviderError | llm.LLMUpstreamError | llm.LLMUnavailable)


def _run_node(scope: NodeScope) -> tuple[NodeResult, int]:
    """Run with the node's retries (transient failures only); returns the result and the attempts made."""
    kind = NODE_KINDS[scope.node["type"]]
    retries = int(scope.node.get("max_retries", 0)) if kind.retryable else 0
    attempt = 0
    while True:
        attempt += 1
        try:
            return kind.run(scope), attempt
        except Exception as error:
            if attempt > retries or not _transient(error):
                raise
            delay = min(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1), RETRY_BACKOFF_MAX)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                scope.run.check_stop()
                time.sleep(min(0.1, delay))


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


def run_flow(run: Run, execution: Execution) -> str:
    version = db.session.get(FlowVersion, (execution.target_id, execution.flow_version))
    if version is None:
        raise ApiError("The flow was deleted before the execution started.", status=404, code="NOT_FOUND")
    nodes = {node["id"]: node for node in version.nodes}
    incoming: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for edge in version.edges:
        incoming[edge["target"]].append(edge)
    outputs: dict[str, str] = {}
    branch: dict[str, bool] = {}
    finals: list[str] = []

    for step in list(run.steps):
        run.check_stop()
        index, node = step["index"], nodes[step["node_id"]]
        live = [e["source"] for e in incoming[node["id"]] if e["source"] in outputs
                and (e["source"] not in branch or e.get("label") == str(branch[e["source"]]).lower())]
        if node["type"] != "input" and not live:
            run.step_finished(index, status="skipped")
            continue
        previous = "\n\n".join(outputs[source] for source in dict.fromkeys(live))
        scope = NodeScope(run=run, node=node, index=index, previous=previous, outputs=outputs)
        run.step_started(index)
        try:
            result, attempts = _run_node(scope)
        except Stopped:
            run.step_finished(index, status="cancelled")
            raise
        except Exception as error:
            if node.get("on_error", "fail") != "continue":
                run.step_finished(index, status="failed", error=_message(error))
                raise
            # on_error "continue": the node's `default` stands in for its output (a failed condition is false).
            result = NodeResult(text=node.get("default", ""), branch=False if node["type"] == "condition" else None)
            run.step_finished(index, status="failed", output=result.text, error=_message(error), continued=True)
        else:
            run.step_finished(index, output=result.text, usage=result.usage, attempts=attempts, **result.details)
        outputs[node["id"]] = result.text
        if result.branch is not None:
            branch[node["id"]] = result.branch
        if node["type"] == "output":
            finals.append(result.text)
    return "\n\n".join(finals)
