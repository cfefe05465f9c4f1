"""Agents: the built-in catalog and each user's own agents."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.errors import ApiError, NotFound, ValidationFailed
from app.extensions import db
from app.http import Page, paginate

from .models import Agent
from .seeding import sync_builtins

AGENT_FIELDS = ("name", "description", "system_prompt", "model", "temperature", "max_tokens", "tools")


class Gone(ApiError):
    status = 409
    code = "CONFLICT"
    message = "Something this request refers to (your account, an agent, a conversation) was deleted meanwhile."


def commit() -> None:
    """Commit; a foreign key that no longer resolves (a concurrent delete) is a 409, not a 500."""
    try:
        db.session.commit()
    except IntegrityError as error:
        db.session.rollback()
        raise Gone() from error


def flush() -> None:
    try:
        db.session.flush()
    except IntegrityError as error:
        db.session.rollback()
        raise Gone() from error


class BuiltinReadOnly(ApiError):
    status = 403
    code = "BUILTIN_READ_ONLY"
    message = "Built-in agents cannot be changed or deleted; create your own agent from its system prompt instead."


def seed_catalog() -> dict[str, int]:
    """Make the built-in agents match the catalog (what `flask agents seed` runs)."""
    counts = sync_builtins(db.session.connection())
    db.session.commit()
    return counts


def catalog() -> list[Agent]:
    return list(db.session.scalars(sa.select(Agent).where(Agent.builtin.is_(True))
                                   .order_by(Agent.category, Agent.name)))


def builtin(slug: str) -> Agent:
    agent = db.session.scalar(sa.select(Agent).where(Agent.slug == slug, Agent.builtin.is_(True)))
    if agent is None:
        raise NotFound("No built-in agent with this slug.")
    return agent


def find_usable(owner_id: str, ref: str) -> Agent | None:
    """An agent the owner may run: one of theirs by id, or a built-in by slug or id."""
    if not ref:
        return None
    if ref.startswith("agt_"):
        agent = db.session.get(Agent, ref)
        if agent is not None and (agent.builtin or agent.owner_id == owner_id):
            return agent
        return None
    return db.session.scalar(sa.select(Agent).where(Agent.slug == ref, Agent.builtin.is_(True)))


def usable(owner_id: str, ref: str) -> Agent:
    agent = find_usable(owner_id, ref)
    if agent is None:
        raise NotFound("No such agent.")
    return agent


def usable_or_422(owner_id: str, ref: str, field: str) -> Agent:
    """For references inside a request body: an unknown (or another user's) agent is a field error."""
    agent = find_usable(owner_id, ref)
    if agent is None:
        raise ValidationFailed({field: [f"No agent {ref!r}: use the id of one of your agents or a catalog slug."]})
    return agent


def owned(owner_id: str, agent_id: str) -> Agent:
    agent = db.session.get(Agent, agent_id) if agent_id.startswith("agt_") else None
    if agent is None or agent.owner_id != owner_id:
        if find_usable(owner_id, agent_id) is not None:  # a built-in: readable by all, writable by none
            raise BuiltinReadOnly()
        raise NotFound()
    return agent


def list_agents(owner_id: str, page: int, per_page: int, search: str | None = None) -> Page:
    statement = sa.select(Agent).where(Agent.owner_id == owner_id)
    if search:
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(sa.or_(sa.func.lower(Agent.name).like(pattern, escape="\\"),
                                           sa.func.lower(Agent.description).like(pattern, escape="\\")))
    return paginate(statement.order_by(Agent.created_at.desc(), Agent.id.desc()), page, per_page)


def _apply(agent: Agent, body: dict[str, Any]) -> None:
    for name in AGENT_FIELDS:
        if name in body:
            setattr(agent, name, body[name])
    if "personality" in body:
        agent.traits = list((body["personality"] or {}).get("traits") or [])


def create(owner_id: str, body: dict[str, Any]) -> Agent:
    agent = Agent(owner_id=owner_id, builtin=False, traits=[], tools=[], description="")
    _apply(agent, body)
    db.session.add(agent)
    commit()
    return agent


def update(owner_id: str, agent_id: str, body: dict[str, Any]) -> Agent:
    agent = owned(owner_id, agent_id)
    _apply(agent, body)
    commit()
    return agent


def delete(owner_id: str, agent_id: str) -> None:
    agent = owned(owner_id, agent_id)
    db.session.delete(agent)
    db.session.commit()


def settings(agent: Agent | None, options: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """Model, temperature and answer budget: the request's override, else the agent's, else the default."""

    def pick(name: str, default: Any) -> Any:
        if options.get(name) is not None:
            return options[name]
        if agent is not None and getattr(agent, name) is not None:
            return getattr(agent, name)
        return default

    limit = int(current_app.config["AGENTS_MAX_TOKENS_LIMIT"])  # the server's cap on one answer, whoever asks
    return {"model": pick("model", None), "temperature": float(pick("temperature", 0.7)),
            "max_tokens": min(int(pick("max_tokens", default_max_tokens)), limit)}
