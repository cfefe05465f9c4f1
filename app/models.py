"""Declarative base, column types shared by every model, and the core's own tables."""
from __future__ import annotations

from datetime import datetime, UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry

from .ids import utcnow


class UTCDateTime(sa.types.TypeDecorator):
    """Stores naive UTC, returns aware UTC: the same on SQLite and PostgreSQL."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# Stable constraint names, so alembic migrations behave the same on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    # One registry (rather than class attributes) so Flask-SQLAlchemy's subclass keeps the map.
    registry = registry(
        metadata=sa.MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={datetime: UTCDateTime(), dict[str, Any]: sa.JSON(), list[Any]: sa.JSON()},
    )


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IdempotencyRecord(Base):
    """One `Idempotency-Key` of one caller on one route, when Redis is not configured (app/idempotency.py).

    `id` is an HMAC of (caller, method, path, key) and `response` is sealed with a key derived
    from the same material, so neither the client's keys nor the stored answers (which may hold
    a new API key's secret or a session's tokens) can be read from the table alone.
    """

    __tablename__ = "idempotency_records"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))  # HMAC of the query string and body
    token: Mapped[str] = mapped_column(sa.String(32))  # the request that holds (or held) the key
    status: Mapped[int | None] = mapped_column(sa.Integer)  # None: the first request is still running
    response: Mapped[bytes | None] = mapped_column(sa.LargeBinary)  # sealed headers and body
    locked_until: Mapped[datetime | None] = mapped_column()  # a running request's claim lapses then
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
