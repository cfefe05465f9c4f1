"""Database set-up: SQLAlchemy engine tuning and alembic with one branch per plugin."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from .extensions import db, migrate

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside a writer; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def init_app(app: Flask) -> None:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:///:memory:"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            sa.event.listen(db.engine, "connect", _sqlite_pragmas)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))


@migrate.configure
def _plugin_version_locations(config: Any) -> Any:
    """Each plugin may ship its own alembic branch; add the active plugins' directories."""
    from flask import current_app

    from .plugins import migration_dirs

    locations = [str(MIGRATIONS_DIR / "versions"), *migration_dirs(current_app)]
    # One path per line: a space would split a plugin installed under "/Users/Jane Doe/..." into
    # two missing directories, and alembic skips missing ones silently (its tables never built).
    # "%" is escaped because alembic's ini values are interpolated.
    config.set_main_option("version_locations", "\n".join(p.replace("%", "%%") for p in locations))
    config.set_main_option("path_separator", "newline")
    return config
