"""Collections, documents and chunks. The database is the truth; FAISS and BM25 files are derived from it.

A chunk row keeps its embedding, so an index can always be rebuilt (another
host, a lost instance directory, a change of index type) without embedding
anything again, and unchanged text is never embedded twice.

Chunks are written `active=False` by the job that makes them and switched on
in the same transaction that publishes the index version containing them:
a job killed half-way leaves only inactive rows, which searches never see.
"""
from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.ids import new_id, utcnow
from app.models import TimestampMixin

PENDING, INDEXING, READY, FAILED = "pending", "indexing", "ready", "failed"
DOCUMENT_STATUSES = (PENDING, INDEXING, READY, FAILED)
SOURCE_TYPES = ("text", "file", "url", "github", "code")
STRATEGIES = ("code", "recursive", "semantic", "fixed")

# BIGINT on PostgreSQL; INTEGER (still 64-bit) on SQLite.
BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def new_vector_id() -> int:
    """A random positive int64: the chunk's id inside FAISS and BM25 (unguessable, unique per table)."""
    return secrets.randbits(62) + 1


class RagCollection(TimestampMixin, db.Model):
    __tablename__ = "rag_collections"
    __table_args__ = (sa.UniqueConstraint("owner_id", "name", name="uq_rag_collections_owner_id_name"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("col"))
    owner_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str | None] = mapped_column(sa.String(500))
    embedder: Mapped[str] = mapped_column(sa.String(100))
    dimension: Mapped[int] = mapped_column()
    # The published index: files under RAG_INDEX_DIR/<id>/v<index_version>; 0 = nothing published yet.
    index_version: Mapped[int] = mapped_column(BigInt, default=0)


class RagDocument(TimestampMixin, db.Model):
    __tablename__ = "rag_documents"
    __table_args__ = (sa.Index("ix_rag_documents_collection_id_path", "collection_id", "path"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("doc"))
    owner_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[str] = mapped_column(sa.ForeignKey("rag_collections.id", ondelete="CASCADE"), index=True)
    source_type: Mapped[str] = mapped_column(sa.String(16))
    source: Mapped[str] = mapped_column(sa.Text)  # url, repository, file name or a title
    path: Mapped[str | None] = mapped_column(sa.String(1000))
    language: Mapped[str | None] = mapped_column(sa.String(40))
    chunking_strategy: Mapped[str | None] = mapped_column(sa.String(16))  # None: chosen per file
    content: Mapped[str | None] = mapped_column(sa.Text)  # extracted text when known up front (text/file/index)
    content_hash: Mapped[str | None] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(BigInt, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default=PENDING)
    error: Mapped[str | None] = mapped_column(sa.Text)
    failures: Mapped[list[Any]] = mapped_column(default=list)  # [{path, error}] of files that could not be indexed
    chunk_count: Mapped[int] = mapped_column(default=0)
    job_id: Mapped[str | None] = mapped_column(sa.String(40))
    indexed_at: Mapped[datetime | None] = mapped_column()


class RagChunk(db.Model):
    __tablename__ = "rag_chunks"
    __table_args__ = (
        sa.Index("ix_rag_chunks_collection_id_active", "collection_id", "active"),
        sa.Index("ix_rag_chunks_collection_id_content_hash", "collection_id", "content_hash"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("chk"))
    vector_id: Mapped[int] = mapped_column(BigInt, unique=True, default=new_vector_id)
    owner_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    collection_id: Mapped[str] = mapped_column(sa.ForeignKey("rag_collections.id", ondelete="CASCADE"))
    document_id: Mapped[str] = mapped_column(sa.ForeignKey("rag_documents.id", ondelete="CASCADE"), index=True)
    active: Mapped[bool] = mapped_column(default=False)
    job_id: Mapped[str | None] = mapped_column(sa.String(40), index=True)  # the job that staged it
    ordinal: Mapped[int] = mapped_column(default=0)
    content: Mapped[str] = mapped_column(sa.Text)
    content_hash: Mapped[str] = mapped_column(sa.String(64))  # of content + embedder: equal hash, equal vector
    embedding: Mapped[bytes] = mapped_column(sa.LargeBinary)  # float32, normalised
    token_count: Mapped[int] = mapped_column(default=0)
    source_type: Mapped[str] = mapped_column(sa.String(16))
    path: Mapped[str | None] = mapped_column(sa.String(1000))
    language: Mapped[str | None] = mapped_column(sa.String(40))
    symbol: Mapped[str | None] = mapped_column(sa.String(300))
    start_line: Mapped[int | None] = mapped_column()
    end_line: Mapped[int | None] = mapped_column()
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
