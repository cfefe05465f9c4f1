"""Helpers for tests that need accounts, sessions and API keys through the real HTTP API.

    tokens = signup(client, "ada@example.com")          # the session's `data`
    admin = make_admin(app, client, "root@example.com")  # an admin's session
    key = create_key(client, tokens, scopes=["keys:read"])["key"]
    client.get("/v1/auth/me", headers=bearer(key))
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

PASSWORD = "Moon-Landing-1969"
OTHER_PASSWORD = "Saturn-Rings-2031"
_TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/')


def bearer(token: str | dict[str, Any]) -> dict[str, str]:
    """`Authorization` header for a raw token, a key, or a session dict (its access token)."""
    if isinstance(token, dict):
        token = token["access_token"]
    return {"Authorization": f"Bearer {token}"}


def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the response is the error envelope with this status (and code); return `error`."""
    body = response.get_json(silent=True)
    text = response.get_data(as_text=True)
    assert response.status_code == status, f"{response.status_code} {text}"
    assert isinstance(body, dict) and set(body) == {"error"}, text
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, text
    assert error["request_id"] == response.headers["X-Request-ID"]
    if code is not None:
        assert error["code"] == code, text
    assert not any(marker in text for marker in _TRACEBACK_MARKERS), text
    return error


def without_request_id(response: Any) -> dict[str, Any]:
    body = response.get_json()
    error = dict(body["error"])
    error.pop("request_id")
    return error


def signup(client: Any, email: str, password: str = PASSWORD, name: str | None = None,
           **kwargs: Any) -> dict[str, Any]:
    """Sign up through the API; returns the session (`user`, `access_token`, `refresh_token`, ...)."""
    body: dict[str, Any] = {"email": email, "password": password}
    if name is not None:
        body["name"] = name
    response = client.post("/v1/auth/signup", json=body, **kwargs)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["data"]


def login(client: Any, email: str, password: str = PASSWORD, **kwargs: Any) -> Any:
    """The raw login response (callers check success or the error)."""
    body = {"email": email, "password": password}
    if "mfa_code" in kwargs:
        body["mfa_code"] = kwargs.pop("mfa_code")
    return client.post("/v1/auth/login", json=body, **kwargs)


def login_ok(client: Any, email: str, password: str = PASSWORD, **kwargs: Any) -> dict[str, Any]:
    response = login(client, email, password, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def create_user(app: Any, email: str, password: str = PASSWORD, **fields: Any) -> str:
    """Create an account directly through the service (e.g. `role="admin"`); returns its id."""
    from plugins.auth import service

    with app.app_context():
        return service.create_user(email, password, **fields).id


def make_admin(app: Any, client: Any, email: str = "root@example.com", password: str = PASSWORD) -> dict[str, Any]:
    """Create an admin account and return a logged-in session of it."""
    create_user(app, email, password, role="admin")
    return login_ok(client, email, password)


def create_key(client: Any, credential: str | dict[str, Any], **settings: Any) -> dict[str, Any]:
    """Create a key through the API (201 asserted); returns `data`, whose `key` is the secret."""
    settings.setdefault("name", "test key")
    settings.setdefault("scopes", ["keys:read"])
    response = client.post("/v1/api-keys", json=settings, headers=bearer(credential))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["data"]


def key_digest(app: Any, key: str) -> str:
    """The keyed hash the server stores for a key (HMAC-SHA-256 with the configured pepper)."""
    pepper = app.config["KEYS_PEPPER"].encode()
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def rows(app: Any, table: str) -> list[dict[str, Any]]:
    """Every row of a table, as dicts (to look for secrets at rest)."""
    import sqlalchemy as sa

    from app.extensions import db

    with app.app_context():
        with db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]


def execute(app: Any, sql: str, **params: Any) -> None:
    import sqlalchemy as sa

    from app.extensions import db

    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.text(sql), params)


class StatementCounter:
    """Counts SQL statements run by an app's engine: `with StatementCounter(app) as sql: ...; sql.count`."""

    def __init__(self, app: Any, match: str | None = None) -> None:
        self.app = app
        self.match = match.lower() if match else None
        self.statements: list[str] = []

    def _listen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.match is None or self.match in " ".join(statement.lower().split()):
            self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)

    def __enter__(self) -> StatementCounter:
        import sqlalchemy as sa

        from app.extensions import db

        with self.app.app_context():
            self.engine = db.engine
        sa.event.listen(self.engine, "before_cursor_execute", self._listen)
        return self

    def __exit__(self, *exc: Any) -> None:
        import sqlalchemy as sa

        sa.event.remove(self.engine, "before_cursor_execute", self._listen)


class FlaskCli:
    """Run the real `flask` command (FLASK_APP=wsgi) against a private SQLite file, and build
    in-process apps on the same database with the same secrets to check what the commands did.

        cli = FlaskCli(tmp_path); cli.migrate()
        result = cli.run("users", "list")
    """

    SECRETS = {
        "SECRET_KEY": "cli-secret-key-" + "c" * 40,
        "JWT_SECRET_KEY": "cli-jwt-secret-" + "j" * 40,
        "KEYS_PEPPER": "cli-pepper-" + "p" * 40,
    }
    CHEAP_ARGON2 = {"AUTH_ARGON2_TIME_COST": 1, "AUTH_ARGON2_MEMORY_KIB": 1024, "AUTH_ARGON2_PARALLELISM": 1}

    def __init__(self, directory: Any) -> None:
        import os
        from pathlib import Path

        self.directory = Path(directory)
        self.database_url = f"sqlite:///{self.directory / 'cli.db'}"
        self.root = Path(__file__).resolve().parent.parent.parent
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUNAOS_") and k not in ("DATABASE_URL",
                                                                                                 "REDIS_URL")}
        env.update({"FLASK_APP": "wsgi", "LUNAOS_INSTANCE_PATH": str(self.directory),
                    "LUNAOS_DATABASE_URL": self.database_url, "LUNAOS_LOG_LEVEL": "WARNING"})
        for name, value in {**self.SECRETS, **self.CHEAP_ARGON2}.items():
            env[f"LUNAOS_{name}"] = str(value)
        self.env = env
        self.apps: list[Any] = []

    def start(self, *args: str, input: str | None = None) -> Any:
        import subprocess

        process = subprocess.Popen([str(self.root / ".venv" / "bin" / "flask"), *args], cwd=self.root, env=self.env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process._lunaos_input = input  # type: ignore[attr-defined]
        return process

    @staticmethod
    def finish(process: Any, timeout: float = 120) -> Any:
        import subprocess

        out, err = process.communicate(process._lunaos_input, timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def run(self, *args: str, input: str | None = None) -> Any:
        """Run one command to completion: a CompletedProcess with text stdout/stderr."""
        return self.finish(self.start(*args, input=input))

    def run_all(self, *commands: tuple[tuple[str, ...], str | None]) -> list[Any]:
        """Run independent commands at once (each `(args, stdin)`): start-up dominates their cost."""
        processes = [self.start(*args, input=stdin) for args, stdin in commands]
        return [self.finish(p) for p in processes]

    def migrate(self) -> None:
        result = self.run("db", "upgrade", "heads")
        assert result.returncode == 0, result.stderr

    def app(self) -> Any:
        """An in-process app on the CLI's database (same secrets), for checking results over HTTP."""
        from app import create_app

        app = create_app({"TESTING": True, "DATABASE_URL": self.database_url, "LOG_LEVEL": "WARNING",
                          **self.SECRETS, **self.CHEAP_ARGON2})
        self.apps.append(app)
        return app

    def close(self) -> None:
        from app.extensions import db

        for app in self.apps:
            with app.app_context():
                db.engine.dispose()
