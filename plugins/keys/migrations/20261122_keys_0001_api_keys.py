"""keys: API keys and their hashed secrets

Revision ID: keys_0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

import app.models

revision = "keys_0001"
down_revision = None
branch_labels = ("keys",)
depends_on = "auth_0001"  # api_keys.user_id references users


def upgrade():
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("allowed_projects", sa.JSON(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("rate_limit", sa.String(64), nullable=True),
        sa.Column("expires_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(40), nullable=True),
        sa.Column("mask_head", sa.String(24), nullable=False),
        sa.Column("mask_tail", sa.String(8), nullable=False),
        sa.Column("last_used_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("request_count", sa.BigInteger(), nullable=False),
        sa.Column("error_count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"])
    op.create_table(
        "api_key_secrets",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_api_key_secrets_key_id_api_keys"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_api_key_secrets")),
    )
    op.create_index(op.f("ix_api_key_secrets_key_id"), "api_key_secrets", ["key_id"])


def downgrade():
    op.drop_table("api_key_secrets")
    op.drop_table("api_keys")
