"""audit: security events

Revision ID: audit_0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

import app.models

revision = "audit_0001"
down_revision = None
branch_labels = ("audit",)
depends_on = None


def upgrade():
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(80), nullable=False),
        sa.Column("actor_id", sa.String(40), nullable=True),
        sa.Column("target_id", sa.String(40), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
        sa.Column("request_id", sa.String(140), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_actor_id"), "audit_events", ["actor_id"])
    op.create_index(op.f("ix_audit_events_created_at"), "audit_events", ["created_at"])
    op.create_index(op.f("ix_audit_events_target_id"), "audit_events", ["target_id"])
    op.create_index("ix_audit_events_type_created", "audit_events", ["type", "created_at"])


def downgrade():
    op.drop_table("audit_events")
