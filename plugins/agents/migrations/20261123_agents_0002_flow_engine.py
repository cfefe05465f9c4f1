"""agents: per-node run records of flow executions, and the stored state a paused flow continues from

Revision ID: agents_0002
Revises: agents_0001
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

import app.models

revision = "agents_0002"
down_revision = "agents_0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("agent_executions") as batch:
        batch.add_column(sa.Column("state", sa.JSON(none_as_null=True), nullable=True))

    op.create_table(
        "agent_node_runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("execution_id", sa.String(40), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("node_type", sa.String(40), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=False),
        sa.Column("started_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["execution_id"], ["agent_executions.id"],
                                name=op.f("fk_agent_node_runs_execution_id_agent_executions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_node_runs")),
    )
    op.create_index(op.f("ix_agent_node_runs_execution_id"), "agent_node_runs", ["execution_id"])


def downgrade():
    op.drop_index(op.f("ix_agent_node_runs_execution_id"), table_name="agent_node_runs")
    op.drop_table("agent_node_runs")
    with op.batch_alter_table("agent_executions") as batch:
        batch.drop_column("state")
