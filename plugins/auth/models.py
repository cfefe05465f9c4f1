"""Accounts and revoked sessions."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.ids import new_id
from app.models import TimestampMixin

ROLES = ("user", "admin")
TIERS = ("free", "pro", "team")


class User(TimestampMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: new_id("usr"))
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)  # normalised: see passwords.normalise_email
    name: Mapped[str | None] = mapped_column(sa.String(200))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16), default="user")
    tier: Mapped[str] = mapped_column(sa.String(16), default="free")
    disabled: Mapped[bool] = mapped_column(default=False)
    mfa_enabled: Mapped[bool] = mapped_column(default=False)
    mfa_secret: Mapped[str | None] = mapped_column(sa.String(255))  # sealed (app.crypto), never plain
    mfa_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)  # last accepted TOTP step: no replays
    # Tokens issued before this instant are refused (password change, "log out everywhere").
    sessions_valid_after: Mapped[datetime | None] = mapped_column()
    last_login_at: Mapped[datetime | None] = mapped_column()
    password_changed_at: Mapped[datetime | None] = mapped_column()


class RevokedSession(db.Model):
    """Session ids revoked by logout, kept until their refresh token would have expired.

    Used when Redis is not configured; with Redis the same facts live there with a TTL.
    """

    __tablename__ = "revoked_sessions"

    session_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
