"""Test harness: real SQLite and PostgreSQL, real Redis, one isolated slot per xdist worker.

- Tests marked `@pytest.mark.db` run once per backend (`[sqlite]`, `[postgresql]`);
  the rest run on SQLite only.
- Each worker of each run gets its own PostgreSQL database, SQLite file and
  Redis key prefix / queue name, so `pytest -n auto` (even two runs at once)
  never shares state. Redis keys a test creates must contain the `worker`
  slot name (REDIS_KEY_PREFIX and JOBS_QUEUE do) to be cleaned up.
- The schema comes from the real migrations (`flask db upgrade heads`), built
  once per worker and backend; rows are deleted after every test.
- The third-party sample plugin is pip-installed into a private directory for
  the session (see `tests/support/sample_plugin.py`).
"""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis as redis_lib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import sample_plugin  # noqa: E402
from tests.support.llm_server import _llm_pool, llm_upstream, llm_upstreams  # noqa: E402,F401  (fixtures)

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 dbname=test")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")


def pytest_configure(config: pytest.Config) -> None:
    # One id per pytest run (inherited by xdist workers): concurrent runs on one machine never collide.
    os.environ.setdefault("TEST_RUN_ID", secrets.token_hex(3))
    config.addinivalue_line("markers", "db: run on SQLite and on PostgreSQL")
    config.addinivalue_line("markers", "slow: starts servers or browsers (still part of the suite)")
    # The developer's own settings must not leak into the suite.
    for name in list(os.environ):
        if name.startswith("LUNAOS_") or name in _ENV_NAMES:
            del os.environ[name]
    sample_plugin.ensure_installed()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marked = metafunc.definition.get_closest_marker("db") is not None
        metafunc.parametrize("backend", ["sqlite", "postgresql"] if marked else ["sqlite"], scope="session")


@pytest.fixture(scope="session")
def worker_index(request: pytest.FixtureRequest) -> int:
    name = getattr(request.config, "workerinput", {}).get("workerid", "main")
    return int(name[2:]) + 1 if name.startswith("gw") else 0


@pytest.fixture(scope="session")
def worker(request: pytest.FixtureRequest) -> str:
    """A slot name unique to this xdist worker of this run: names databases, prefixes, queues."""
    name = getattr(request.config, "workerinput", {}).get("workerid", "main")
    return f"{name}_{os.environ['TEST_RUN_ID']}"


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("instance")
    os.environ["LUNAOS_INSTANCE_PATH"] = str(path)
    return path


@pytest.fixture(scope="session")
def database_url(backend: str, worker: str, instance_dir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{instance_dir / f'test-{worker}.db'}"
        return
    name = f"lunaos_test_{worker}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url(worker_index: int) -> str:
    # Databases 1..15: one per xdist worker (0 is left to whatever else runs here).
    return f"{REDIS_BASE_URL}/{1 + worker_index % 15}"


def _delete_prefixed(client: redis_lib.Redis, worker: str) -> None:
    # Not FLUSHDB: another run on this machine may share the database number.
    keys = list(client.scan_iter(match=f"*{worker}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_client(redis_url: str, worker: str) -> Iterator[redis_lib.Redis]:
    """A client on this worker's Redis database; every key naming this worker's slot is removed."""
    client = redis_lib.Redis.from_url(redis_url)
    _delete_prefixed(client, worker)
    yield client
    _delete_prefixed(client, worker)
    client.close()


def base_config(database_url: str, worker: str) -> dict[str, Any]:
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key-" + "x" * 40,
        "JWT_SECRET_KEY": "test-jwt-secret-" + "y" * 40,
        "LOG_LEVEL": "INFO",
        "HEALTH_CACHE_SECONDS": 0,
        "REDIS_KEY_PREFIX": f"lunaos-test-{worker}:",
        "JOBS_QUEUE": f"lunaos-test-{worker}",
        # argon2 at production cost would make every sign-up in the suite take ~100 ms.
        "AUTH_ARGON2_TIME_COST": 1,
        "AUTH_ARGON2_MEMORY_KIB": 1024,
        "AUTH_ARGON2_PARALLELISM": 1,
        "KEYS_PEPPER": "test-pepper-" + "z" * 40,
        # No in-process model unless a test asks for one: AI tests name their upstreams.
        "LLM_OFFLINE": False,
    }


@pytest.fixture(scope="session")
def schema(database_url: str, worker: str) -> str:
    """Build the schema once per worker and backend through the real migrations."""
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db

    app = create_app(base_config(database_url, worker))
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade(revision="heads")
        db.engine.dispose()
    return database_url


def _clean(app: Any) -> None:
    from app.extensions import db

    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                if conn.dialect.has_table(conn, table.name):
                    conn.execute(table.delete())
        db.engine.dispose()


@pytest.fixture
def make_app(schema: str, worker: str) -> Iterator[Callable[..., Any]]:
    """`make_app(**overrides)` builds an app on this test's backend; cleaned up after the test."""
    from app import create_app

    built: list[Any] = []

    def factory(**overrides: Any) -> Any:
        app = create_app({**base_config(schema, worker), **overrides})
        built.append(app)
        return app

    yield factory
    if built:
        _clean(built[0])
    for app in built:
        with app.app_context():
            from app.extensions import db

            db.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def redis_app(make_app: Callable[..., Any], redis_url: str, redis_client: redis_lib.Redis) -> Any:
    """An app in production shape: Redis for limits, jobs and events."""
    return make_app(REDIS_URL=redis_url)


@pytest.fixture
def principal_token() -> Callable[..., str]:
    """Register a resolver on `app` accepting a made-up token for a given Principal.

    For core tests that must not depend on the identity plugins.
    """
    from app.security import Principal, register_resolver

    def make(app: Any, token: str = "test-token", **fields: Any) -> str:
        fields.setdefault("kind", "user")
        fields.setdefault("id", "usr_test")
        fields.setdefault("user_id", fields["id"])
        fields["scopes"] = frozenset(fields.get("scopes", ()))
        principal = Principal(**fields)
        register_resolver(app, lambda presented: principal if presented == token else None)
        return token

    return make
