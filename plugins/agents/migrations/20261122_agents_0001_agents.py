"""agents: agents (and the built-in catalog), conversations, executions, chains, flows

Revision ID: agents_0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

import app.models

revision = "agents_0001"
down_revision = None
branch_labels = ("agents",)
depends_on = "auth_0001"  # every table here has an owner in users


def _timestamps() -> list:
    return [sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
            sa.Column("updated_at", app.models.UTCDateTime(), nullable=False)]


def upgrade():
    op.create_table(
        "agents",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=True),
        sa.Column("slug", sa.String(64), nullable=True),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("category", sa.String(40), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("traits", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("temperature", sa.Double(), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        sa.Column("tools", sa.JSON(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_agents_owner_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("slug", name=op.f("uq_agents_slug")),
    )
    op.create_index(op.f("ix_agents_owner_id"), "agents", ["owner_id"])

    op.create_table(
        "agent_conversations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_agent_conversations_agent_id_agents"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_agent_conversations_owner_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_conversations")),
    )
    op.create_index(op.f("ix_agent_conversations_agent_id"), "agent_conversations", ["agent_id"])
    op.create_index(op.f("ix_agent_conversations_owner_id"), "agent_conversations", ["owner_id"])

    op.create_table(
        "agent_messages",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("conversation_id", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(100), nullable=True),
        sa.Column("usage", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("finish_reason", sa.String(32), nullable=True),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["agent_conversations.id"],
                                name=op.f("fk_agent_messages_conversation_id_agent_conversations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_messages")),
        sa.UniqueConstraint("conversation_id", "position", name=op.f("uq_agent_messages_conversation_id")),
    )

    op.create_table(
        "agent_executions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("target_name", sa.String(200), nullable=False),
        sa.Column("flow_version", sa.Integer(), nullable=True),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(100), nullable=True),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("started_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("finished_at", app.models.UTCDateTime(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_agent_executions_owner_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_executions")),
    )
    op.create_index(op.f("ix_agent_executions_owner_id"), "agent_executions", ["owner_id"])
    op.create_index(op.f("ix_agent_executions_status"), "agent_executions", ["status"])

    op.create_table(
        "agent_execution_events",
        sa.Column("execution_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["execution_id"], ["agent_executions.id"],
                                name=op.f("fk_agent_execution_events_execution_id_agent_executions"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("execution_id", "seq", name=op.f("pk_agent_execution_events")),
    )

    op.create_table(
        "agent_chains",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_agent_chains_owner_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_chains")),
    )
    op.create_index(op.f("ix_agent_chains_owner_id"), "agent_chains", ["owner_id"])

    op.create_table(
        "agent_flows",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("edges", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_agent_flows_owner_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_flows")),
    )
    op.create_index(op.f("ix_agent_flows_owner_id"), "agent_flows", ["owner_id"])

    op.create_table(
        "agent_flow_versions",
        sa.Column("flow_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("edges", sa.JSON(), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["flow_id"], ["agent_flows.id"],
                                name=op.f("fk_agent_flow_versions_flow_id_agent_flows"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("flow_id", "version", name=op.f("pk_agent_flow_versions")),
    )

    # Data: the built-in catalog (later catalog changes are applied by `flask agents seed`).
    from plugins.agents.seeding import sync_builtins

    sync_builtins(op.get_bind())


def downgrade():
    op.drop_table("agent_flow_versions")
    op.drop_table("agent_flows")
    op.drop_table("agent_chains")
    op.drop_table("agent_execution_events")
    op.drop_table("agent_executions")
    op.drop_table("agent_messages")
    op.drop_table("agent_conversations")
    op.drop_table("agents")
