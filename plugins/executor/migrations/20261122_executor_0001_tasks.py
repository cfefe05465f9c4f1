"""executor: stored plans (tasks), their runs and each run's event log

Revision ID: executor_0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

import app.models

revision = "executor_0001"
down_revision = None
branch_labels = ("executor",)
depends_on = "auth_0001"  # tasks and runs have an owner in users


def _timestamps() -> list:
    return [sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
            sa.Column("updated_at", app.models.UTCDateTime(), nullable=False)]


def upgrade():
    op.create_table(
        "executor_tasks",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("os_family", sa.String(16), nullable=False),
        sa.Column("cwd", sa.String(1000), nullable=False),
        sa.Column("planner", sa.String(8), nullable=False),
        sa.Column("intent", sa.String(40), nullable=True),
        sa.Column("fallback_reason", sa.String(500), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("plan_hash", sa.String(64), nullable=False),
        sa.Column("requires_confirmation", sa.Boolean(), nullable=False),
        sa.Column("estimated_time", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("last_run_id", sa.String(40), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_executor_tasks_owner_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executor_tasks")),
    )
    op.create_index(op.f("ix_executor_tasks_owner_id"), "executor_tasks", ["owner_id"])

    op.create_table(
        "executor_runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("task_id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("matches_plan", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("started_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("finished_at", app.models.UTCDateTime(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_executor_runs_owner_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["task_id"], ["executor_tasks.id"],
                                name=op.f("fk_executor_runs_task_id_executor_tasks"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executor_runs")),
    )
    op.create_index(op.f("ix_executor_runs_owner_id"), "executor_runs", ["owner_id"])
    op.create_index(op.f("ix_executor_runs_task_id"), "executor_runs", ["task_id"])

    op.create_table(
        "executor_run_events",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["executor_runs.id"],
                                name=op.f("fk_executor_run_events_run_id_executor_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_executor_run_events")),
    )


def downgrade():
    op.drop_table("executor_run_events")
    op.drop_table("executor_runs")
    op.drop_table("executor_tasks")
