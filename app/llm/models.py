"""Token usage, one row per day, user, key, provider and model (the table stays small)."""
from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class LlmUsage(db.Model):
    __tablename__ = "llm_usage"

    # The key's column order serves the read path: one user's recent days.
    # "" stands for no user / no key: NULLs would never conflict, and the upsert would insert twice.
    user_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    key_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    requests: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0)
