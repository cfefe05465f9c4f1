"""The LLM planner: the model is asked for a JSON plan, which is validated against a schema and
re-rated step by step here (the model's own idea of risk is ignored). Any answer that does not
parse, does not validate, or holds a step the checker blocks is `InvalidPlan`: the caller then
falls back to the rules planner."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import marshmallow as ma
from marshmallow import validate

from app import llm

from .apps import MANAGER, WINDOWS
from .planning import Step
from .risk import assess_steps

log = logging.getLogger("lunaos.executor")
_OS_NAMES = {"macos": "macOS", "debian": "Debian/Ubuntu Linux", "fedora": "Fedora Linux", "windows": "Windows"}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


class InvalidPlan(Exception):
    """The model's answer is not a usable plan (the message says why)."""


class _StepSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE  # a "risk" the model adds is ignored: steps are rated here

    description = ma.fields.String(required=True, validate=validate.Length(min=1, max=300))
    command = ma.fields.String(required=True, validate=validate.Length(min=1, max=2000))


class _PlanSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    steps = ma.fields.List(ma.fields.Nested(_StepSchema), required=True, validate=validate.Length(min=1))
    estimated_time = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40))


@dataclass
class LlmPlan:
    steps: list[Step]
    estimated_time: str | None
    provider: str
    model: str


def prompt(request: str, family: str, cwd: str, project_type: str | None, max_steps: int) -> list[llm.Message]:
    shell = "PowerShell" if family == WINDOWS else "a POSIX shell (bash)"
    system = (
        f"You turn a user's request into shell commands for a {_OS_NAMES.get(family, family)} computer, run "
        f"with {shell}; packages come from {MANAGER.get(family, 'the system package manager')}. Answer with one "
        'JSON object and nothing else: {"steps": [{"description": "...", "command": "..."}], '
        '"estimated_time": "1-2 minutes"}. '
        f"Use at most {max_steps} steps, one command each: first check, then act, then verify. "
        "Never delete files outside the current directory, never pipe downloads into a shell, never use sudo "
        "unless a system package manager needs it, and ask for nothing interactive.")
    user = f"Request: {request}\nCurrent directory: {cwd}" + (f"\nProject type: {project_type}" if project_type
                                                               else "")
    return [llm.Message("system", system), llm.Message("user", user)]


def parse(text: str, max_steps: int) -> tuple[list[Step], str | None]:
    """The model's answer -> validated, checked steps; InvalidPlan otherwise."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise InvalidPlan("the answer holds no JSON object")
    try:
        data = json.loads(body[start:end + 1])
    except ValueError as error:
        raise InvalidPlan(f"the answer is not valid JSON ({error.msg})") from None
    try:
        loaded = _PlanSchema().load(data if isinstance(data, dict) else {})
    except ma.ValidationError as error:
        raise InvalidPlan(f"the plan does not match the schema: {json.dumps(error.messages)[:200]}") from None
    if len(loaded["steps"]) > max_steps:
        raise InvalidPlan(f"the plan has {len(loaded['steps'])} steps, more than {max_steps}")
    steps = [Step(s["description"].strip(), s["command"].strip(), (5, 60)) for s in loaded["steps"]]
    for index, assessment in enumerate(assess_steps([s.command for s in steps]), start=1):
        if assessment.blocked:
            raise InvalidPlan(f"step {index} would be blocked: {assessment.reason}")
    return steps, loaded["estimated_time"]


def plan(request: str, family: str, cwd: str, project_type: str | None, *, max_steps: int, max_tokens: int,
         model: str | None, user_id: str | None, key_id: str | None) -> LlmPlan:
    """Ask the configured model; InvalidPlan when its answer is unusable or no model answers."""
    chat = llm.ChatRequest(messages=prompt(request, family, cwd, project_type, max_steps), model=model or None,
                           temperature=0.0, max_tokens=max_tokens, user=user_id)
    try:
        result = llm.chat(chat)
    except (llm.LLMUnavailable, llm.LLMUpstreamError, llm.ModelNotFound, llm.ProviderError) as error:
        raise InvalidPlan(f"no model answered ({getattr(error, 'message', None) or error})") from None
    try:
        llm.record_usage(user_id=user_id, key_id=key_id, provider=result.provider, model=result.model,
                         usage=result.usage)
    except Exception:  # metering must not cost the user the plan
        log.exception("recording the planner's token usage failed")
    steps, estimate = parse(result.content, max_steps)
    return LlmPlan(steps, estimate, result.provider, result.model)
