"""Stored plans (tasks), their runs, and each run's append-only event log (the SSE replay)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.ids import new_id, utcnow
from app.models import TimestampMixin


def _user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


class ExecutorTask(TimestampMixin, db.Model):
    """A plan: the request, the steps as planned (with their ratings) and a hash a run is checked against."""

    __tablename__ = "executor_tasks"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("task"))
    owner_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    key_id: Mapped[str | None] = mapped_column(sa.String(40))
    request: Mapped[str] = mapped_column(sa.Text)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    os_family: Mapped[str] = mapped_column(sa.String(16))
    cwd: Mapped[str] = mapped_column(sa.String(1000), default=".")  # relative to the owner's workspace
    planner: Mapped[str] = mapped_column(sa.String(8))  # "rules" | "llm"
    intent: Mapped[str | None] = mapped_column(sa.String(40))
    fallback_reason: Mapped[str | None] = mapped_column(sa.String(500))
    steps: Mapped[list[Any]] = mapped_column(default=list)  # [{id, description, command, risk, reason}]
    plan_hash: Mapped[str] = mapped_column(sa.String(64))
    requires_confirmation: Mapped[bool] = mapped_column(default=False)
    estimated_time: Mapped[str] = mapped_column(sa.String(40), default="")
    status: Mapped[str] = mapped_column(sa.String(16), default="planned")  # "planned", then its last run's
    run_count: Mapped[int] = mapped_column(default=0)
    last_run_id: Mapped[str | None] = mapped_column(sa.String(40))


class ExecutorRun(TimestampMixin, db.Model):
    """One run of a plan's steps (as submitted, re-rated), with a result per step that ran."""

    __tablename__ = "executor_runs"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("run"))
    task_id: Mapped[str] = mapped_column(sa.ForeignKey("executor_tasks.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(_user_fk(), index=True)
    key_id: Mapped[str | None] = mapped_column(sa.String(40))
    job_id: Mapped[str | None] = mapped_column(sa.String(40))
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    steps: Mapped[list[Any]] = mapped_column(default=list)  # [{id, description, command, risk, reason, modified}]
    results: Mapped[list[Any]] = mapped_column(default=list)  # [{step_id, status, output, error, exit_code, ...}]
    confirmed: Mapped[bool] = mapped_column(default=False)
    matches_plan: Mapped[bool] = mapped_column(default=True)
    error: Mapped[str | None] = mapped_column(sa.Text)
    last_seq: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class ExecutorRunEvent(db.Model):
    """Events of a run, numbered 1, 2, 3, ...: written before they are published, replayed on reconnect."""

    __tablename__ = "executor_run_events"

    run_id: Mapped[str] = mapped_column(sa.ForeignKey("executor_runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    event: Mapped[str] = mapped_column(sa.String(16))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
