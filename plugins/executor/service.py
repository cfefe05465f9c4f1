"""Plans and history: planning a request, storing the plan, checking a run against it, listing tasks."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app import events, llm
from app.errors import ApiError, NotFound, ValidationFailed
from app.extensions import db
from app.http import Page, paginate
from app.ids import isoformat
from app.security import Principal

from . import apps, planner_llm, planner_rules, settings
from .models import ExecutorRun, ExecutorTask
from .rating import SAFE
from .risk import assess_steps

log = logging.getLogger("lunaos.executor")
TASK_STATUSES = ("planned", "queued", "running", "completed", "partial", "failed", "cancelled")
HISTORY_RUNS = 20


class CommandBlocked(ApiError):
    status, code, message = 422, "COMMAND_BLOCKED", "A step is blocked and nothing was run."


class UnsupportedCommand(ApiError):
    status, code, message = 422, "UNSUPPORTED_COMMAND", "The request is not something the planner can plan."


class ConfirmationRequired(ApiError):
    status, code, message = 409, "CONFIRMATION_REQUIRED", "Steps that change the system need a confirmation."


def plan_hash(steps: list[dict[str, Any]], cwd: str) -> str:
    canonical = json.dumps({"cwd": cwd, "steps": [[s["id"], s["command"]] for s in steps]}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def relative_cwd(current_dir: str | None, workspace: Path) -> str:
    """The client's current_dir as a path inside the caller's workspace ("." is its root)."""
    text = (current_dir or "").strip()
    if text in ("", "~", ".", "~/"):
        return "."
    if text.startswith("~/"):
        text = text[2:]
    elif text.startswith("/"):
        root = str(workspace)
        if text != root and not text.startswith(root + "/"):
            raise ValidationFailed({"context.current_dir": [
                "Must be inside your executor workspace (relative, or ~/...): steps never run elsewhere."]})
        text = text[len(root):].lstrip("/") or "."
    normal = posixpath.normpath(text)
    if normal == ".." or normal.startswith("../") or normal.startswith("/"):
        raise ValidationFailed({"context.current_dir": ["Must not leave your executor workspace."]})
    return normal


def estimate(steps: list[planner_rules.Step]) -> str:
    low = sum(s.seconds[0] for s in steps)
    high = max(sum(s.seconds[1] for s in steps), low)
    if high < 60:
        return "a few seconds" if high <= 10 else f"{max(low, 1)}-{high} seconds"
    lo_min, hi_min = max(math.ceil(low / 60), 1), math.ceil(high / 60)
    return f"about {hi_min} minute{'s' if hi_min > 1 else ''}" if lo_min == hi_min else f"{lo_min}-{hi_min} minutes"


@dataclass
class _Planned:
    steps: list[planner_rules.Step]
    planner: str
    intent: str | None
    estimated_time: str
    fallback_reason: str | None = None


def _use_llm() -> bool:
    mode = current_app.config["EXECUTOR_PLANNER"]
    if mode == "rules":
        return False
    if mode == "llm":
        if not llm.available():
            raise llm.LLMUnavailable()
        return True
    return llm.available()


def _make_plan(principal: Principal, command: str, family: str, cwd: str, project_type: str | None) -> _Planned:
    config = current_app.config
    max_steps = int(config["EXECUTOR_MAX_STEPS"])
    fallback = None
    literal = planner_rules.plan(command, family) if planner_rules.literal_command(command) else None
    if literal is None and _use_llm():
        try:
            answer = planner_llm.plan(command, family, cwd, project_type, max_steps=max_steps,
                                      max_tokens=int(config["EXECUTOR_LLM_MAX_TOKENS"]),
                                      model=config["EXECUTOR_LLM_MODEL"] or None, user_id=principal.user_id,
                                      key_id=principal.key_id)
            return _Planned(answer.steps, "llm", None, answer.estimated_time or estimate(answer.steps))
        except planner_llm.InvalidPlan as error:
            fallback = str(error)[:500]
            log.info("the model's plan was unusable (%s); using the rules planner", fallback)
    try:
        found = literal or planner_rules.plan(command, family)
    except planner_rules.Unsupported as error:
        details: dict[str, Any] = {"suggestions": error.suggestions}
        if fallback:
            details["llm_error"] = fallback
        raise UnsupportedCommand(error.message, details=details) from None
    if len(found.steps) > max_steps:
        raise UnsupportedCommand(f"The plan would need {len(found.steps)} steps, more than EXECUTOR_MAX_STEPS "
                                 f"({max_steps}); ask for less at once.", details={"suggestions": []})
    return _Planned(found.steps, "rules", found.intent, estimate(found.steps), fallback)


def create_plan(principal: Principal, command: str, context: dict[str, Any]) -> ExecutorTask:
    family = apps.family(context.get("os"))
    workspace = settings.workspace(principal.user_id)  # type: ignore[arg-type]
    cwd = relative_cwd(context.get("current_dir"), workspace)
    planned = _make_plan(principal, command, family, cwd, context.get("project_type"))
    assessments = assess_steps([s.command for s in planned.steps])
    blocked = [(i, a) for i, a in enumerate(assessments, start=1) if a.blocked]
    if blocked:  # a literal `run ...` request (the planners themselves never produce one)
        _refuse(principal, None, [{"step_id": i, "command": planned.steps[i - 1].command, "reason": a.reason}
                                  for i, a in blocked])
    steps = [{"id": i, "description": s.description, "command": s.command, "risk": a.risk, "reason": a.reason}
             for i, (s, a) in enumerate(zip(planned.steps, assessments, strict=True), start=1)]
    task = ExecutorTask(owner_id=principal.user_id, key_id=principal.key_id, request=command, context=context,
                        os_family=family, cwd=cwd, planner=planned.planner, intent=planned.intent,
                        fallback_reason=planned.fallback_reason, steps=steps, plan_hash=plan_hash(steps, cwd),
                        requires_confirmation=any(s["risk"] != SAFE for s in steps),
                        estimated_time=planned.estimated_time[:40], status="planned")
    db.session.add(task)
    db.session.commit()
    events.publish("executor.plan.created", {"task_id": task.id, "planner": task.planner, "intent": task.intent,
                                             "steps": [{"id": s["id"], "command": s["command"][:500],
                                                        "risk": s["risk"]} for s in steps]},
                   owner=principal.user_id)
    return task


def _refuse(principal: Principal, task: ExecutorTask | None, blocked: list[dict[str, Any]]) -> None:
    events.publish("executor.command.blocked", {"task_id": task.id if task else None,
                                                "steps": [{**b, "command": b["command"][:500]} for b in blocked]},
                   owner=principal.user_id)
    first = blocked[0]
    raise CommandBlocked(f"Step {first['step_id']} is blocked: {first['reason']}. Nothing was run.",
                         details={"step_id": first["step_id"], "reason": first["reason"], "blocked": blocked})


def owned_task(owner_id: str, task_id: str) -> ExecutorTask:
    task = db.session.get(ExecutorTask, task_id)
    if task is None or task.owner_id != owner_id:
        raise NotFound("No such task.")
    return task


def check_run(principal: Principal, task: ExecutorTask, steps: list[dict[str, Any]],
              confirm: bool) -> list[dict[str, Any]]:
    """The steps to run, re-rated; raises CommandBlocked or ConfirmationRequired. Confirmation: `confirm`
    covers the plan's own steps; a step that differs from the plan needs its own `confirm`."""
    limit = int(current_app.config["EXECUTOR_MAX_STEPS"])
    if len(steps) > limit:
        raise ValidationFailed({"steps": [f"At most {limit} steps (EXECUTOR_MAX_STEPS)."]})
    planned = {s["id"]: s for s in task.steps}
    assessments = assess_steps([s["command"] for s in steps])
    checked, blocked, pending = [], [], []
    for step, assessment in zip(steps, assessments, strict=True):
        original = planned.get(step["id"])
        modified = original is None or original["command"] != step["command"]
        if assessment.blocked:
            blocked.append({"step_id": step["id"], "command": step["command"], "reason": assessment.reason})
        confirmed = bool(step.get("confirm")) if modified else confirm
        if assessment.risk != SAFE and not confirmed:
            pending.append({"step_id": step["id"], "risk": assessment.risk, "reason": assessment.reason,
                            "modified": modified})
        description = step.get("description") or (original or {}).get("description") or ""
        checked.append({"id": step["id"], "description": description[:500], "command": step["command"],
                        "risk": assessment.risk, "reason": assessment.reason, "modified": modified,
                        "confirmed": confirmed and assessment.risk != SAFE})
    if blocked:
        _refuse(principal, task, blocked)
    if pending:
        first = pending[0]
        how = ("its own `confirm: true` (it differs from the plan)" if first["modified"]
               else "`confirm: true` in the request")
        raise ConfirmationRequired(f"Step {first['step_id']} is rated {first['risk']} ({first['reason']}) and needs "
                                   f"{how}.", details={"steps": pending})
    return checked


def list_tasks(owner_id: str, page: int, per_page: int, status: str | None = None) -> Page:
    statement = sa.select(ExecutorTask).where(ExecutorTask.owner_id == owner_id)
    if status:
        statement = statement.where(ExecutorTask.status == status)
    return paginate(statement.order_by(ExecutorTask.created_at.desc(), ExecutorTask.id.desc()), page, per_page)


def recent_runs(task_id: str) -> list[ExecutorRun]:
    return list(db.session.scalars(sa.select(ExecutorRun).where(ExecutorRun.task_id == task_id)
                                   .order_by(ExecutorRun.created_at.desc(), ExecutorRun.id.desc())
                                   .limit(HISTORY_RUNS)))


def task_detail(owner_id: str, task_id: str) -> dict[str, Any]:
    """The task with its recent runs, each reconciled first (a run whose worker died is finished now)."""
    from .runs import reconcile

    task = owned_task(owner_id, task_id)
    for run in recent_runs(task.id):
        reconcile(run)
    db.session.expire_all()  # reconcile writes with UPDATEs; the session keeps objects across commits
    return task_view(owned_task(owner_id, task_id), recent_runs(task_id))


def plan_view(task: ExecutorTask) -> dict[str, Any]:
    return {"task_id": task.id, "command": task.request, "planner": task.planner, "intent": task.intent,
            "fallback_reason": task.fallback_reason, "os": task.os_family, "current_dir": task.cwd,
            "steps": [{**s, "status": "pending"} for s in task.steps],
            "requires_confirmation": task.requires_confirmation, "estimated_time": task.estimated_time,
            "plan_hash": task.plan_hash, "created_at": isoformat(task.created_at)}


def task_view(task: ExecutorTask, runs: list[ExecutorRun] | None = None) -> dict[str, Any]:
    from .runs import run_view

    view = {**plan_view(task), "status": task.status, "run_count": task.run_count, "last_run_id": task.last_run_id,
            "updated_at": isoformat(task.updated_at)}
    if runs is not None:
        view["runs"] = [run_view(r) for r in runs]
    return view
