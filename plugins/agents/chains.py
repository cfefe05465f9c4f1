"""Chains: linear pipelines of steps, each an agent or a prompt template, each fed the previous output."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.errors import ApiError, NotFound, ValidationFailed
from app.extensions import db
from app.http import Page

from . import catalog, prompting, service
from .generation import Stopped
from .models import Chain, Execution
from .runtime import Run

FIRST_STEP_PROMPT = "{input}"
# A later agent step sees what the chain was asked and what the step before it produced.
DEFAULT_STEP_PROMPT = ("The original request:\n\n{input}\n\n"
                       "The output of the previous step:\n\n{previous}")
STEP_OPTIONS = ("model", "temperature", "max_tokens")


def check_steps(owner_id: str, steps: list[dict[str, Any]], field: str = "steps") -> list[dict[str, Any]]:
    """Every step names a usable agent or has a prompt (or both); unknown agents are field errors."""
    errors: dict[str, list[str]] = {}
    clean = []
    for index, step in enumerate(steps):
        if not step.get("agent") and not step.get("prompt"):
            errors[f"{field}.{index}"] = ["A step needs an agent (id or catalog slug), a prompt template, or both."]
            continue
        if step.get("agent") and service.find_usable(owner_id, step["agent"]) is None:
            errors[f"{field}.{index}.agent"] = [f"No agent {step['agent']!r}: use one of your agent ids or a "
                                                "catalog slug."]
        clean.append({k: v for k, v in step.items() if v is not None})
    if errors:
        raise ValidationFailed(errors)
    return clean


def _preset_view(chain: dict[str, Any]) -> dict[str, Any]:
    return {"id": chain["slug"], "name": chain["name"], "description": chain["description"], "preset": True,
            "steps": chain["steps"], "created_at": None, "updated_at": None}


def view(chain: Chain) -> dict[str, Any]:
    return {"id": chain.id, "name": chain.name, "description": chain.description, "preset": False,
            "steps": chain.steps, "created_at": chain.created_at, "updated_at": chain.updated_at}


def list_chains(owner_id: str, page: int, per_page: int) -> Page:
    """Presets first, then the owner's chains, newest first, as one paginated list."""
    presets = [_preset_view(chain) for chain in catalog.PRESET_CHAINS]
    custom = sa.select(Chain).where(Chain.owner_id == owner_id)
    total = len(presets) + (db.session.scalar(sa.select(sa.func.count()).select_from(custom.subquery())) or 0)
    start = (page - 1) * per_page
    items = presets[start:start + per_page]
    if len(items) < per_page:
        offset = max(start - len(presets), 0)
        rows = db.session.scalars(custom.order_by(Chain.created_at.desc(), Chain.id.desc())
                                  .offset(offset).limit(per_page - len(items)))
        items += [view(chain) for chain in rows]
    return Page(items=items, page=page, per_page=per_page, total=total)


def owned(owner_id: str, chain_id: str) -> Chain:
    chain = db.session.get(Chain, chain_id)
    if chain is None or chain.owner_id != owner_id:
        raise NotFound("No such chain.")
    return chain


def get(owner_id: str, chain_id: str) -> dict[str, Any]:
    found = catalog.preset(chain_id)
    return _preset_view(found) if found else view(owned(owner_id, chain_id))


def create(owner_id: str, body: dict[str, Any]) -> Chain:
    chain = Chain(owner_id=owner_id, name=body["name"], description=body.get("description") or "",
                  steps=check_steps(owner_id, body["steps"]))
    db.session.add(chain)
    service.commit()
    return chain


def update(owner_id: str, chain_id: str, body: dict[str, Any]) -> Chain:
    if catalog.preset(chain_id):
        raise ApiError("Preset chains cannot be changed; create your own chain from its steps.", status=403,
                       code="BUILTIN_READ_ONLY")
    chain = owned(owner_id, chain_id)
    for name in ("name", "description"):
        if name in body:
            setattr(chain, name, body[name])
    if "steps" in body:
        chain.steps = check_steps(owner_id, body["steps"])
    service.commit()
    return chain


def delete(owner_id: str, chain_id: str) -> None:
    if catalog.preset(chain_id):
        raise ApiError("Preset chains cannot be deleted.", status=403, code="BUILTIN_READ_ONLY")
    db.session.delete(owned(owner_id, chain_id))
    db.session.commit()


def resolve(owner_id: str, body: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(target id, name, steps) of what `POST /chains/execute` asks to run."""
    if bool(body.get("chain")) == bool(body.get("steps")):
        raise ValidationFailed({"chain": ["Give either a chain (id or preset slug) or inline steps."]})
    if body.get("steps"):
        return "inline", "inline chain", check_steps(owner_id, body["steps"])
    found = catalog.preset(body["chain"])
    if found is not None:
        return found["slug"], found["name"], [dict(step) for step in found["steps"]]
    chain = db.session.get(Chain, body["chain"])
    if chain is None or chain.owner_id != owner_id:
        raise ValidationFailed({"chain": ["No such chain: use one of your chain ids or a preset slug."]})
    return chain.id, chain.name, check_steps(owner_id, chain.steps)


def step_records(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": index, "name": step.get("name") or step.get("agent") or f"step {index + 1}",
             "agent": step.get("agent"), "prompt": step.get("prompt"), "status": "pending",
             "options": {k: step[k] for k in STEP_OPTIONS if step.get(k) is not None}}
            for index, step in enumerate(steps)]


def run_chain(run: Run, execution: Execution) -> str:
    previous: Any = run.input
    for index, step in enumerate(list(run.steps)):
        run.check_stop()
        agent = None
        if step.get("agent"):
            agent = service.find_usable(run.owner_id, step["agent"])
            if agent is None:
                raise ApiError(f"Step {index + 1}: the agent {step['agent']!r} no longer exists.", status=422,
                               code="VALIDATION_ERROR", details={"step": index})
        template = step.get("prompt") or (FIRST_STEP_PROMPT if index == 0 else DEFAULT_STEP_PROMPT)
        user = prompting.render(template, input=run.input, previous=previous, context=run.context)
        if index == 0 and not step.get("prompt"):
            user = prompting.with_context(user, run.context)
        system = prompting.system_prompt(agent) if agent is not None else None
        run.step_started(index)
        try:
            result = run.generate(system, user, run.settings(agent, step.get("options")), step=index)
        except Stopped:
            run.step_finished(index, status="cancelled")
            raise
        except Exception as error:
            run.step_finished(index, status="failed", error=str(getattr(error, "message", error)))
            raise
        run.step_finished(index, output=result.text, usage=result.usage, model=result.model)
        previous = result.text
    return prompting.as_text(previous)
