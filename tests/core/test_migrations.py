"""Migrations and models agree, on SQLite and PostgreSQL, and the migrations run both ways.

The drift check is alembic's own autogenerate comparison: a model changed without
a migration (a column, a table, a type, an index, nullability) makes it non-empty.
"""
from __future__ import annotations

from pprint import pformat

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from tests.conftest import PG_ADMIN_DSN, base_config

pytestmark = pytest.mark.db


def schema_drift(metadata: sa.MetaData | None = None) -> list:
    """What `flask db migrate` would write for the current database (inside an app context)."""
    metadata = metadata if metadata is not None else db.metadata
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            # The options the project's migrations are generated with (app/extensions.py).
            **current_app.extensions["migrate"].configure_args,
            "compare_type": True,
            "target_metadata": metadata,
        })
        return compare_metadata(context, metadata)


def assert_no_drift() -> None:
    diffs = schema_drift()
    assert diffs == [], ("the models differ from what the migrations build; write a migration "
                         "(`flask db migrate -m ...`, in the owning plugin's branch):\n" + pformat(diffs))


def table_names() -> set[str]:
    with db.engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config())


def all_revisions() -> set[str]:
    return {revision.revision for revision in _script().walk_revisions()}


def applied_revisions() -> set[str]:
    """Every revision the database has run: its stored heads and all they descend or depend on.

    (alembic_version omits a branch head that another stored head depends on.)
    """
    script = _script()
    with db.engine.connect() as connection:
        todo = list(MigrationContext.configure(connection).get_current_heads())
    seen: set[str] = set()
    while todo:
        revision = script.get_revision(todo.pop())
        if revision is None or revision.revision in seen:
            continue
        seen.add(revision.revision)
        for parent in (revision.down_revision, revision.dependencies):
            if parent:
                todo.extend([parent] if isinstance(parent, str) else parent)
    return seen


@pytest.fixture
def fresh_app(backend, worker, tmp_path):
    """An app on an empty database of this backend, made for this test alone."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        name = f"lunaos_test_{worker}_fresh"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://127.0.0.1:5432/{name}"
    app = create_app(base_config(url, worker))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if backend != "sqlite":
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_suite_database_matches_the_models(make_app):
    # The database every other test runs on was built by `flask db upgrade heads` (conftest `schema`).
    app = make_app()
    with app.app_context():
        assert_no_drift()
        assert applied_revisions() == all_revisions()


def test_upgrade_from_empty_builds_exactly_the_models(fresh_app):
    with fresh_app.app_context():
        assert table_names() == set()
        upgrade(revision="heads")
        model_tables = set(db.metadata.tables)
        assert model_tables, "no models registered: nothing would be checked"
        assert table_names() == model_tables | {"alembic_version"}
        assert applied_revisions() == all_revisions()
        assert_no_drift()


def test_downgrade_to_base_and_back_up(fresh_app):
    with fresh_app.app_context():
        upgrade(revision="heads")
        downgrade(revision="base")
        # Every migration's downgrade ran: no table of ours is left behind.
        assert table_names() - {"alembic_version"} == set()
        assert applied_revisions() == set()
        upgrade(revision="heads")
        assert applied_revisions() == all_revisions()
        assert_no_drift()


def test_upgrade_is_idempotent(fresh_app):
    with fresh_app.app_context():
        upgrade(revision="heads")
        upgrade(revision="heads")  # a second deploy with nothing new is a no-op
        assert applied_revisions() == all_revisions()


def test_drift_check_notices_a_model_change_without_a_migration(make_app):
    """Guard against a vacuous check: edit a copy of the models and the comparison must say so."""
    app = make_app()
    with app.app_context():
        changed = sa.MetaData(naming_convention=db.metadata.naming_convention)
        for table in db.metadata.tables.values():
            table.to_metadata(changed)
        some_table = changed.tables[sorted(changed.tables)[0]]
        some_table.append_column(sa.Column("added_without_migration", sa.String(40), nullable=True))
        sa.Table("table_without_migration", changed, sa.Column("id", sa.String(32), primary_key=True))

        diffs = schema_drift(changed)
        # ("add_column", schema, table name, Column) and ("add_table", Table)
        kinds = {(d[0], d[3].name if d[0] == "add_column" else d[1].name) for d in diffs
                 if isinstance(d, tuple) and d[0] in ("add_column", "add_table")}
        assert ("add_column", "added_without_migration") in kinds
        assert ("add_table", "table_without_migration") in kinds
