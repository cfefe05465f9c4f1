"""auth: accounts and revoked sessions

Revision ID: auth_0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

import app.models

revision = "auth_0001"
down_revision = None
branch_labels = ("auth",)
depends_on = None


def upgrade():
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("mfa_enabled", sa.Boolean(), nullable=False),
        sa.Column("mfa_secret", sa.String(255), nullable=True),
        sa.Column("mfa_last_step", sa.BigInteger(), nullable=True),
        sa.Column("sessions_valid_after", app.models.UTCDateTime(), nullable=True),
        sa.Column("last_login_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("password_changed_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "revoked_sessions",
        sa.Column("session_id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("expires_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_revoked_sessions_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_revoked_sessions")),
    )
    op.create_index(op.f("ix_revoked_sessions_expires_at"), "revoked_sessions", ["expires_at"])
    op.create_index(op.f("ix_revoked_sessions_user_id"), "revoked_sessions", ["user_id"])


def downgrade():
    op.drop_table("revoked_sessions")
    op.drop_table("users")
