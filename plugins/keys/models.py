"""API keys and their secrets (stored only as keyed hashes)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.ids import new_id, utcnow
from app.models import TimestampMixin


class ApiKey(TimestampMixin, db.Model):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("key"))
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str | None] = mapped_column(sa.String(500))
    environment: Mapped[str] = mapped_column(sa.String(8), default="live")
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    allowed_projects: Mapped[list[Any] | None] = mapped_column()  # None: every project
    tags: Mapped[list[Any]] = mapped_column(default=list)
    rate_limit: Mapped[str | None] = mapped_column(sa.String(64))  # overrides the owner's tier
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(sa.String(40))
    mask_head: Mapped[str] = mapped_column(sa.String(24))
    mask_tail: Mapped[str] = mapped_column(sa.String(8))
    last_used_at: Mapped[datetime | None] = mapped_column()
    request_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    error_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)

    secrets: Mapped[list[ApiKeySecret]] = relationship(back_populates="key", cascade="all, delete-orphan",
                                                         passive_deletes=True)

    @property
    def masked(self) -> str:
        return f"{self.mask_head}...{self.mask_tail}"

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"


class ApiKeySecret(db.Model):
    """One secret of a key: the current one, and during a rotation's grace period the old one."""

    __tablename__ = "api_key_secrets"

    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # HMAC-SHA-256(pepper, key), hex
    key_id: Mapped[str] = mapped_column(sa.ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()  # set when rotated out

    key: Mapped[ApiKey] = relationship(back_populates="secrets")
