"""rag: collections, documents and chunks (with their embeddings)

Revision ID: rag_0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

import app.models

revision = "rag_0001"
down_revision = None
branch_labels = ("rag",)
depends_on = "auth_0001"  # every table here has an owner in users

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamps() -> list:
    return [sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
            sa.Column("updated_at", app.models.UTCDateTime(), nullable=False)]


def upgrade():
    op.create_table(
        "rag_collections",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("embedder", sa.String(100), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("index_version", BigInt, nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_rag_collections_owner_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rag_collections")),
        sa.UniqueConstraint("owner_id", "name", name="uq_rag_collections_owner_id_name"),
    )
    op.create_index(op.f("ix_rag_collections_owner_id"), "rag_collections", ["owner_id"])
    op.create_table(
        "rag_documents",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("collection_id", sa.String(40), nullable=False),
        sa.Column("source_type", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("path", sa.String(1000), nullable=True),
        sa.Column("language", sa.String(40), nullable=True),
        sa.Column("chunking_strategy", sa.String(16), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("size_bytes", BigInt, nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("indexed_at", app.models.UTCDateTime(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_rag_documents_owner_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["collection_id"], ["rag_collections.id"],
                                name=op.f("fk_rag_documents_collection_id_rag_collections"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rag_documents")),
    )
    op.create_index(op.f("ix_rag_documents_owner_id"), "rag_documents", ["owner_id"])
    op.create_index(op.f("ix_rag_documents_collection_id"), "rag_documents", ["collection_id"])
    op.create_index("ix_rag_documents_collection_id_path", "rag_documents", ["collection_id", "path"])
    op.create_table(
        "rag_chunks",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("vector_id", BigInt, nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("collection_id", sa.String(40), nullable=False),
        sa.Column("document_id", sa.String(40), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("source_type", sa.String(16), nullable=False),
        sa.Column("path", sa.String(1000), nullable=True),
        sa.Column("language", sa.String(40), nullable=True),
        sa.Column("symbol", sa.String(300), nullable=True),
        sa.Column("start_line", sa.Integer(), nullable=True),
        sa.Column("end_line", sa.Integer(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["rag_collections.id"],
                                name=op.f("fk_rag_chunks_collection_id_rag_collections"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["document_id"], ["rag_documents.id"],
                                name=op.f("fk_rag_chunks_document_id_rag_documents"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rag_chunks")),
        sa.UniqueConstraint("vector_id", name=op.f("uq_rag_chunks_vector_id")),
    )
    op.create_index(op.f("ix_rag_chunks_owner_id"), "rag_chunks", ["owner_id"])
    op.create_index(op.f("ix_rag_chunks_document_id"), "rag_chunks", ["document_id"])
    op.create_index(op.f("ix_rag_chunks_job_id"), "rag_chunks", ["job_id"])
    op.create_index("ix_rag_chunks_collection_id_active", "rag_chunks", ["collection_id", "active"])
    op.create_index("ix_rag_chunks_collection_id_content_hash", "rag_chunks", ["collection_id", "content_hash"])


def downgrade():
    op.drop_table("rag_chunks")
    op.drop_table("rag_documents")
    op.drop_table("rag_collections")
