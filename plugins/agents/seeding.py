"""Make the built-in agents in the database match `catalog.BUILTIN_AGENTS` (idempotent).

Works on a plain SQLAlchemy connection with a table description of its own,
so the migration can run it without the app's models (which may be newer than
the schema the migration runs against).
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.ids import new_id, utcnow
from app.models import UTCDateTime

from .catalog import BUILTIN_AGENTS

agents_table = sa.table(
    "agents",
    sa.column("id", sa.String),
    sa.column("owner_id", sa.String),
    sa.column("slug", sa.String),
    sa.column("builtin", sa.Boolean),
    sa.column("name", sa.String),
    sa.column("description", sa.String),
    sa.column("category", sa.String),
    sa.column("system_prompt", sa.Text),
    sa.column("traits", sa.JSON),
    sa.column("model", sa.String),
    sa.column("temperature", sa.Float),
    sa.column("max_tokens", sa.Integer),
    sa.column("tools", sa.JSON),
    sa.column("created_at", UTCDateTime),
    sa.column("updated_at", UTCDateTime),
)

_SYNCED = ("name", "description", "category", "system_prompt", "traits", "temperature", "max_tokens")


def _values(agent: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": agent["name"],
        "description": agent["description"],
        "category": agent["category"],
        "system_prompt": agent["system_prompt"],
        "traits": list(agent.get("traits", [])),
        "temperature": agent.get("temperature"),
        "max_tokens": agent.get("max_tokens"),
    }


def sync_builtins(connection: sa.Connection) -> dict[str, int]:
    """Insert missing built-ins and update changed ones; returns counts of created/updated/unchanged."""
    existing = {row.slug: row for row in connection.execute(
        sa.select(agents_table).where(agents_table.c.builtin.is_(True)))}
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    now = utcnow()
    for agent in BUILTIN_AGENTS:
        values = _values(agent)
        row = existing.get(agent["slug"])
        if row is None:
            connection.execute(agents_table.insert().values(
                id=new_id("agt"), owner_id=None, slug=agent["slug"], builtin=True, model=None, tools=[],
                created_at=now, updated_at=now, **values))
            counts["created"] += 1
        elif any(getattr(row, name) != values[name] for name in _SYNCED):
            connection.execute(agents_table.update().where(agents_table.c.slug == agent["slug"])
                               .values(updated_at=now, **values))
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    return counts
