"""Node kinds of flows: how each checks its config at save time and what it does when run.

A kind is registered by name; `register_node_kind()` lets another plugin add
one (it must list `agents` in its `requires` and import this module).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app import retrieval

from . import conditions, prompting, service

MAX_TEMPLATE = 20_000
ON_ERROR = ("fail", "continue", "branch")


@dataclass
class NodeResult:
    text: str
    branch: bool | None = None  # condition nodes: which labelled edges carry on
    usage: Any = None  # llm.Usage of the model call, when there was one
    details: dict[str, Any] = field(default_factory=dict)  # kept in the node's step record


@dataclass
class NodeScope:
    """What a node sees when it runs."""

    run: Any  # runtime.Run
    node: dict[str, Any]
    index: int
    previous: str
    outputs: dict[str, str]  # node id -> output, for {nodes.ID} placeholders
    should_stop: Callable[[], bool] | None = None  # true once this attempt must end (cancel, timeout, limits)
    reply: Any = None  # human_input: what `POST /v1/executions/{id}/resume` supplied

    def stopping(self) -> bool:
        return self.should_stop() if self.should_stop is not None else self.run.stop_requested()

    @property
    def config(self) -> dict[str, Any]:
        return self.node.get("config") or {}

    def render(self, template: str) -> str:
        return prompting.render(template, input=self.run.input, previous=self.previous, context=self.run.context,
                                nodes=self.outputs)


@dataclass(frozen=True)
class NodeKind:
    name: str
    description: str
    check: Callable[[dict[str, Any], str], list[str]]  # (config, owner_id) -> problems
    run: Callable[[NodeScope], NodeResult]
    retryable: bool = False  # its failures may be transient (a model, a search): max_retries applies
    pauses: bool = False  # waits for a person: the run pauses until it is resumed with the node's input


NODE_KINDS: dict[str, NodeKind] = {}


def register_node_kind(kind: NodeKind) -> None:
    existing = NODE_KINDS.get(kind.name)
    if existing is not None and existing is not kind:
        raise RuntimeError(f"flow node kind {kind.name!r} is already registered")
    NODE_KINDS[kind.name] = kind


# --- config checks ----------------------------------------------------------------------------

def _template(config: dict[str, Any], name: str, required: bool) -> list[str]:
    value = config.get(name)
    if value is None:
        return [f"config.{name} is required (a prompt template; {{input}} and {{previous}} are filled in)"] \
            if required else []
    if not isinstance(value, str) or not value.strip():
        return [f"config.{name} must be non-empty text"]
    if len(value) > MAX_TEMPLATE:
        return [f"config.{name} may have at most {MAX_TEMPLATE} characters"]
    return []


def _model_options(config: dict[str, Any]) -> list[str]:
    out = []
    model = config.get("model")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= 200):
        out.append("config.model must be a model id (1-200 characters)")
    temperature = config.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)
                                    or not 0 <= temperature <= 2):
        out.append("config.temperature must be a number from 0 to 2")
    max_tokens = config.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or not 1 <= max_tokens <= 32_768):
        out.append("config.max_tokens must be a whole number from 1 to 32768")
    return out


def _check_input(config: dict[str, Any], owner_id: str) -> list[str]:
    fieldname = config.get("field")
    if fieldname is not None and (not isinstance(fieldname, str) or not fieldname):
        return ["config.field must be the name of a field of an object input"]
    return []


def _check_llm(config: dict[str, Any], owner_id: str) -> list[str]:
    return _template(config, "prompt", True) + _template(config, "system", False) + _model_options(config)


def _check_agent(config: dict[str, Any], owner_id: str) -> list[str]:
    ref = config.get("agent")
    if not isinstance(ref, str) or not ref:
        problems = ["config.agent is required (the id of one of your agents or a catalog slug)"]
    elif service.find_usable(owner_id, ref) is None:
        problems = [f"config.agent: no agent {ref!r} (use one of your agent ids or a catalog slug)"]
    else:
        problems = []
    return problems + _template(config, "prompt", False) + _model_options(config)


def _check_rag(config: dict[str, Any], owner_id: str) -> list[str]:
    if not retrieval.available():
        return ["rag_search nodes need the rag plugin, which is not loaded on this server"]
    problems = _template(config, "query", False)
    top_k = config.get("top_k", 5)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
        problems.append("config.top_k must be a whole number from 1 to 50")
    if "filters" in config and not isinstance(config["filters"], dict):
        problems.append("config.filters must be an object")
    return problems


def _check_condition(config: dict[str, Any], owner_id: str) -> list[str]:
    return conditions.problems(config)


def _check_output(config: dict[str, Any], owner_id: str) -> list[str]:
    return _template(config, "template", False)


def _check_human_input(config: dict[str, Any], owner_id: str) -> list[str]:
    return _template(config, "prompt", True) + _check_input(config, owner_id)


# --- running ----------------------------------------------------------------------------------

def _run_input(scope: NodeScope) -> NodeResult:
    value = scope.run.input
    if isinstance(value, dict):
        wanted = scope.config.get("field") or ("message" if "message" in value else None)
        if wanted is not None and wanted in value:
            value = value[wanted]
    return NodeResult(text=prompting.as_text(value))


def _run_llm(scope: NodeScope) -> NodeResult:
    config = scope.config
    system = scope.render(config["system"]) if config.get("system") else None
    result = scope.run.generate(system, scope.render(config["prompt"]), scope.run.settings(None, config),
                                should_stop=scope.stopping, step=scope.index, node_id=scope.node["id"])
    return NodeResult(text=result.text, usage=result.usage, details={"model": result.model})


def _run_agent(scope: NodeScope) -> NodeResult:
    config = scope.config
    agent = service.find_usable(scope.run.owner_id, config["agent"])
    if agent is None:
        raise LookupError(f"the agent {config['agent']!r} no longer exists")
    user = scope.render(config.get("prompt") or "{previous}")
    result = scope.run.generate(prompting.system_prompt(agent), user, scope.run.settings(agent, config),
                                should_stop=scope.stopping, step=scope.index, node_id=scope.node["id"])
    return NodeResult(text=result.text, usage=result.usage, details={"model": result.model, "agent": agent.public_id})


def _run_rag(scope: NodeScope) -> NodeResult:
    config = scope.config
    query = scope.render(config.get("query") or "{previous}")
    results = retrieval.search(scope.run.owner_id, query, int(config.get("top_k", 5)), **(config.get("filters") or {}))
    blocks = []
    for number, hit in enumerate(results, start=1):
        meta = hit.get("metadata") or {}
        source = meta.get("path") or meta.get("source") or ""
        blocks.append(f"[{number}]{' ' + source if source else ''}\n{hit.get('content', '')}")
    summary = [{"score": hit.get("score"), "metadata": hit.get("metadata") or {},
                "content": str(hit.get("content", ""))[:500]} for hit in results]
    return NodeResult(text="\n\n".join(blocks), details={"query": query, "results": json.loads(
        json.dumps(summary, default=str))})


def _run_condition(scope: NodeScope) -> NodeResult:
    outcome = conditions.evaluate(scope.config, scope.previous)
    return NodeResult(text=scope.previous, branch=outcome, details={"result": outcome})


def _run_output(scope: NodeScope) -> NodeResult:
    return NodeResult(text=scope.render(scope.config.get("template") or "{previous}"))


def human_prompt(scope: NodeScope) -> str:
    return scope.render(scope.config["prompt"])


def _run_human_input(scope: NodeScope) -> NodeResult:
    """The person's input is the output (config.field picks a field of an object, like the input node's)."""
    value = scope.reply
    if isinstance(value, dict):
        wanted = scope.config.get("field") or ("message" if "message" in value else None)
        if wanted is not None and wanted in value:
            value = value[wanted]
    return NodeResult(text=prompting.as_text(value))


for _kind in (
    NodeKind("input", "Where the flow starts: the execution's input (config.field picks a field of an object).",
             _check_input, _run_input),
    NodeKind("llm", "A model call: config.prompt (template), optional system, model, temperature, max_tokens.",
             _check_llm, _run_llm, retryable=True),
    NodeKind("agent", "Runs an agent (config.agent: id or catalog slug) on config.prompt (default {previous}).",
             _check_agent, _run_agent, retryable=True),
    NodeKind("rag_search", "Searches your indexed content: config.query (template, default {previous}), top_k.",
             _check_rag, _run_rag, retryable=True),
    NodeKind("condition", "Tests the previous output (config.operator, value); follow edges labelled true/false.",
             _check_condition, _run_condition),
    NodeKind("output", "A result of the flow: config.template (default {previous}).", _check_output, _run_output),
    NodeKind("human_input", "Pauses the run (status waiting_input) and shows config.prompt (template) until POST "
             "/v1/executions/{id}/resume gives the input, which becomes this node's output (config.field picks a "
             "field of an object).", _check_human_input, _run_human_input, pauses=True),
):
    register_node_kind(_kind)
