"""Agents, conversations, executions (with their event logs), chains and flows."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.ids import new_id, utcnow
from app.models import TimestampMixin



def _user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


class Agent(TimestampMixin, db.Model):
    """A user's agent, or a built-in one (no owner, a slug, read-only)."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("agt"))
    owner_id: Mapped[str | None] = mapped_column(_user_fk(), index=True)
    slug: Mapped[str | None] = mapped_column(sa.String(64), unique=True)  # built-ins only
    builtin: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.String(1000), default="")
    category: Mapped[str | None] = mapped_column(sa.String(40))
    system_prompt: Mapped[str] = mapped_column(sa.Text)
    traits: Mapped[list[Any]] = mapped_column(default=list)
    model: Mapped[str | None] = mapped_column(sa.String(200))
    temperature: Mapped[float | None] = mapped_column()
    max_tokens: Mapped[int | None] = mapped_column()
    tools: Mapped[list[Any]] = mapped_column(default=list)

    @property
    def personality(self) -> dict[str, Any]:
        return {"traits": list(self.traits or [])}

    @property
    def public_id(self) -> str:
        """What clients use to name it: the slug of a built-in, the id of a user's agent."""
        return self.slug if self.builtin and self.slug else self.id


class Conversation(TimestampMixin, db.Model):
    __tablename__ = "agent_conversations"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("cnv"))
    owner_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    agent_id: Mapped[str] = mapped_column(sa.ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(sa.String(200), default="")
    message_count: Mapped[int] = mapped_column(default=0)

    agent: Mapped[Agent] = relationship(lazy="joined")

    @property
    def agent_public_id(self) -> str:
        return self.agent.public_id


class ConversationMessage(db.Model):
    __tablename__ = "agent_messages"
    __table_args__ = (sa.UniqueConstraint("conversation_id", "position"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("msg"))
    # Indexed by the unique constraint's (conversation_id, position).
    conversation_id: Mapped[str] = mapped_column(sa.ForeignKey("agent_conversations.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column()  # 0, 1, 2, ... within the conversation
    role: Mapped[str] = mapped_column(sa.String(16))  # "user" | "assistant"
    content: Mapped[str] = mapped_column(sa.Text)
    tokens: Mapped[int] = mapped_column(default=0)  # counted once, reused when trimming history
    model: Mapped[str | None] = mapped_column(sa.String(200))
    provider: Mapped[str | None] = mapped_column(sa.String(100))
    usage: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    finish_reason: Mapped[str | None] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Execution(TimestampMixin, db.Model):
    """One run of an agent, a chain or a flow, with an append-only event log."""

    __tablename__ = "agent_executions"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("exe"))
    owner_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    key_id: Mapped[str | None] = mapped_column(sa.String(40))  # the API key that started it (usage records)
    kind: Mapped[str] = mapped_column(sa.String(16))  # "agent" | "chain" | "flow"
    target_id: Mapped[str] = mapped_column(sa.String(64))  # agent id or slug, chain id or preset slug, flow id
    target_name: Mapped[str] = mapped_column(sa.String(200), default="")
    flow_version: Mapped[int | None] = mapped_column()
    input: Mapped[Any] = mapped_column(sa.JSON())
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)  # model, temperature, max_tokens overrides
    status: Mapped[str] = mapped_column(sa.String(16), default="queued", index=True)
    output: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    steps: Mapped[list[Any]] = mapped_column(default=list)
    model: Mapped[str | None] = mapped_column(sa.String(200))
    provider: Mapped[str | None] = mapped_column(sa.String(100))
    job_id: Mapped[str | None] = mapped_column(sa.String(40))
    last_seq: Mapped[int] = mapped_column(default=0)  # sequence number of the newest event
    # Flows: what a paused run continues from (outputs, settled nodes, human inputs, counters); see flow_runner.
    state: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    @property
    def waiting(self) -> dict[str, Any] | None:
        """What a `waiting_input` execution asks for: {node_id, prompt}."""
        if self.status != "waiting_input":
            return None
        waiting = (self.state or {}).get("waiting") or {}
        return {"node_id": waiting.get("node_id"), "prompt": waiting.get("prompt", "")} if waiting else None

    @property
    def usage_totals(self) -> dict[str, int]:
        usage = self.usage or {}
        return {name: int(usage.get(name, 0)) for name in ("prompt_tokens", "completion_tokens", "total_tokens")}


class ExecutionEvent(db.Model):
    __tablename__ = "agent_execution_events"

    execution_id: Mapped[str] = mapped_column(sa.ForeignKey("agent_executions.id", ondelete="CASCADE"),
                                              primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    event: Mapped[str] = mapped_column(sa.String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NodeRun(db.Model):
    """One run of one flow node in one execution (all its attempts): what it got, gave, cost and took."""

    __tablename__ = "agent_node_runs"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("nrn"))
    execution_id: Mapped[str] = mapped_column(sa.ForeignKey("agent_executions.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str] = mapped_column(sa.String(64))
    node_type: Mapped[str] = mapped_column(sa.String(40))
    index: Mapped[int] = mapped_column()  # the node's position in the flow's topological order
    status: Mapped[str] = mapped_column(sa.String(16))  # running|waiting|succeeded|failed|cancelled
    attempts: Mapped[int] = mapped_column(default=0)
    input: Mapped[str | None] = mapped_column(sa.Text)  # truncated, like every text here
    output: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    duration_ms: Mapped[int | None] = mapped_column()

    @property
    def usage_totals(self) -> dict[str, int]:
        usage = self.usage or {}
        return {name: int(usage.get(name, 0)) for name in ("prompt_tokens", "completion_tokens", "total_tokens")}


class Chain(TimestampMixin, db.Model):
    __tablename__ = "agent_chains"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("chn"))
    owner_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.String(1000), default="")
    steps: Mapped[list[Any]] = mapped_column(default=list)


class Flow(TimestampMixin, db.Model):
    """The current graph of a flow; every save of a graph also makes an immutable `FlowVersion`."""

    __tablename__ = "agent_flows"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("flw"))
    owner_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.String(1000), default="")
    status: Mapped[str] = mapped_column(sa.String(16), default="active")  # "draft" | "active" | "archived"
    version: Mapped[int] = mapped_column(default=1)
    nodes: Mapped[list[Any]] = mapped_column(default=list)
    edges: Mapped[list[Any]] = mapped_column(default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)


class FlowVersion(db.Model):
    __tablename__ = "agent_flow_versions"

    flow_id: Mapped[str] = mapped_column(sa.ForeignKey("agent_flows.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    nodes: Mapped[list[Any]] = mapped_column(default=list)
    edges: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
