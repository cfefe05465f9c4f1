"""Configuration: where each setting comes from, what start-up refuses, and the secrets.

Each test builds apps with `create_app` on a fresh instance directory (the
LUNAOS_INSTANCE_PATH variable) and sets the environment with monkeypatch.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app, plugins
from app.config import ConfigError, Defaults
from app.extensions import db

ROOT = Path(__file__).resolve().parent.parent.parent
# Fixed (not generated per process): they appear in test ids, which xdist workers must agree on.
STRONG = hashlib.sha256(b"lunaos test secret key").hexdigest()
STRONG_JWT = hashlib.sha256(b"lunaos test jwt secret key").hexdigest()


@pytest.fixture
def instance(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "instance"
    path.mkdir()
    monkeypatch.setenv("LUNAOS_INSTANCE_PATH", str(path))
    # Only the sample plugin: these tests are about the core's rules, not about the
    # settings and secrets each first-party plugin adds.
    monkeypatch.setenv("LUNAOS_PLUGINS", "sample")
    return path


def write_instance_config(instance: Path, body: str) -> None:
    (instance / "config.py").write_text(textwrap.dedent(body))


def test_each_source_overrides_the_one_before(instance, monkeypatch):
    write_instance_config(instance, """
        RATELIMIT_ANONYMOUS = "10/minute"
        MAX_CONTENT_LENGTH = 1000
        SSE_HEARTBEAT_SECONDS = 10.0
        SAMPLE_GREETING = "hello from the instance"
    """)
    monkeypatch.setenv("LUNAOS_MAX_CONTENT_LENGTH", "2000")
    monkeypatch.setenv("LUNAOS_SSE_HEARTBEAT_SECONDS", "5")
    monkeypatch.setenv("LUNAOS_RATELIMIT_TIERS", '{"free": "5/minute", "pro": "50/minute"}')
    config = create_app({"SSE_HEARTBEAT_SECONDS": 1.5}).config

    assert config["RATELIMIT_STRATEGY"] == Defaults.RATELIMIT_STRATEGY  # class default
    assert config["RATELIMIT_ANONYMOUS"] == "10/minute"  # instance/config.py beats the default
    assert config["MAX_CONTENT_LENGTH"] == 2000  # the environment beats instance/config.py, JSON-decoded
    assert config["SSE_HEARTBEAT_SECONDS"] == 1.5  # create_app's mapping beats the environment
    assert config["RATELIMIT_TIERS"] == {"free": "5/minute", "pro": "50/minute"}
    # A plugin's default is overridden by instance/config.py, and that by the environment.
    assert config["SAMPLE_GREETING"] == "hello from the instance"
    monkeypatch.setenv("LUNAOS_SAMPLE_GREETING", "hello from the environment")
    assert create_app().config["SAMPLE_GREETING"] == "hello from the environment"


def test_a_nested_env_setting_changes_one_key_of_one_app(instance, monkeypatch):
    monkeypatch.setenv("LUNAOS_RATELIMIT_TIERS__free", "5/minute")
    tiers = create_app().config["RATELIMIT_TIERS"]
    assert tiers["free"] == "5/minute" and tiers["pro"] == Defaults.RATELIMIT_TIERS["pro"]
    monkeypatch.delenv("LUNAOS_RATELIMIT_TIERS__free")
    # The next app (a test, a second worker app) starts from the documented defaults again.
    assert create_app().config["RATELIMIT_TIERS"]["free"] == "60/minute"
    assert Defaults.RATELIMIT_TIERS["free"] == "60/minute"


def test_standard_names_are_used_when_the_prefixed_twin_is_absent(instance, monkeypatch, redis_url):
    plain_db = f"sqlite:///{instance / 'plain.db'}"
    monkeypatch.setenv("DATABASE_URL", plain_db)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SECRET_KEY", STRONG)
    config = create_app().config
    assert config["SQLALCHEMY_DATABASE_URI"] == plain_db
    assert config["REDIS_URL"] == redis_url
    assert config["RATELIMIT_STORAGE_URI"] == redis_url
    assert config["SECRET_KEY"] == STRONG

    prefixed_db = f"sqlite:///{instance / 'prefixed.db'}"
    monkeypatch.setenv("LUNAOS_DATABASE_URL", prefixed_db)
    monkeypatch.setenv("LUNAOS_SECRET_KEY", STRONG_JWT)
    config = create_app().config
    assert config["SQLALCHEMY_DATABASE_URI"] == prefixed_db
    assert config["SECRET_KEY"] == STRONG_JWT
    assert config["REDIS_URL"] == redis_url  # its twin is still absent


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_urls_use_the_psycopg_driver(instance, monkeypatch, scheme):
    # Heroku-style `postgres://` URLs, as hosting providers hand them out, must just work.
    monkeypatch.setenv("DATABASE_URL", f"{scheme}://127.0.0.1:5432/test")
    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://127.0.0.1:5432/test"
    with app.app_context():
        assert db.session.scalar(sa.text("SELECT 1")) == 1
        assert db.engine.dialect.driver == "psycopg"
        db.session.remove()
        db.engine.dispose()


def test_an_unknown_setting_fails_start_up_naming_it(instance, monkeypatch):
    monkeypatch.setenv("LUNAOS_DATABSE_URL", "sqlite:///typo.db")
    with pytest.raises(ConfigError, match="LUNAOS_DATABSE_URL: unknown setting"):
        create_app()


def test_declared_settings_of_libraries_and_plugins_are_known(instance, monkeypatch):
    monkeypatch.setenv("LUNAOS_SQLALCHEMY_ECHO", "false")  # a library's own key
    monkeypatch.setenv("LUNAOS_SAMPLE_GREETING", "hi")  # the sample plugin declares it
    assert create_app().config["SAMPLE_GREETING"] == "hi"
    # A disabled plugin's settings may stay in the environment (they are not typos).
    monkeypatch.setenv("LUNAOS_DISABLED_PLUGINS", "sample")
    app = create_app()
    assert plugins.report(app).statuses["sample"].status == "disabled"


@pytest.mark.parametrize("name, value, expected", [
    ("LUNAOS_PLUGINS_STRICT", "maybe", "expected bool"),
    ("LUNAOS_RATELIMIT_TIERS", "[1]", "expected dict"),
    ("LUNAOS_MAX_CONTENT_LENGTH", "ten megabytes", "expected int"),
    ("LUNAOS_ENV", "prod", "must be one of development, production"),
])
def test_a_value_of_the_wrong_type_fails_start_up_naming_it(instance, monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        create_app()
    line = next(line for line in str(error.value).splitlines() if name in line)
    assert expected in line


def test_lists_may_be_comma_separated_or_json(instance, monkeypatch):
    monkeypatch.setenv("LUNAOS_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("LUNAOS_DISABLED_PLUGINS", "sample")
    app = create_app()
    assert app.config["CORS_ORIGINS"] == ["https://a.example", "https://b.example"]
    assert plugins.report(app).statuses["sample"].status == "disabled"
    monkeypatch.setenv("LUNAOS_CORS_ORIGINS", '["https://c.example"]')
    monkeypatch.setenv("LUNAOS_DISABLED_PLUGINS", "[]")
    app = create_app()
    assert app.config["CORS_ORIGINS"] == ["https://c.example"]
    assert plugins.report(app).statuses["sample"].status == "loaded"


@pytest.mark.parametrize("secret_key, jwt_key, refused", [
    (None, None, ["LUNAOS_SECRET_KEY", "LUNAOS_JWT_SECRET_KEY"]),
    ("too-short-a-secret", STRONG_JWT, ["LUNAOS_SECRET_KEY"]),
    ("changeme", STRONG_JWT, ["LUNAOS_SECRET_KEY"]),
    (STRONG, "", ["LUNAOS_JWT_SECRET_KEY"]),
    (STRONG, "secret", ["LUNAOS_JWT_SECRET_KEY"]),
], ids=["both-missing", "short", "default", "jwt-empty", "jwt-default"])
def test_production_refuses_missing_short_or_default_secrets(instance, monkeypatch, secret_key, jwt_key, refused):
    monkeypatch.setenv("LUNAOS_ENV", "production")
    for name, value in (("LUNAOS_SECRET_KEY", secret_key), ("LUNAOS_JWT_SECRET_KEY", jwt_key)):
        if value is not None:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        create_app()
    message = str(error.value)
    for name in ("LUNAOS_SECRET_KEY", "LUNAOS_JWT_SECRET_KEY"):
        assert (f"set {name} " in message) == (name in refused)
    assert not (instance / "secrets.json").exists()  # nothing is generated in production


def test_production_starts_with_strong_secrets(instance, monkeypatch):
    monkeypatch.setenv("LUNAOS_ENV", "production")
    monkeypatch.setenv("LUNAOS_SECRET_KEY", STRONG)
    monkeypatch.setenv("LUNAOS_JWT_SECRET_KEY", STRONG_JWT)
    config = create_app().config
    assert (config["SECRET_KEY"], config["JWT_SECRET_KEY"]) == (STRONG, STRONG_JWT)
    assert not (instance / "secrets.json").exists()


def test_development_generates_secrets_once_and_keeps_them_private(instance):
    first = create_app().config
    path = instance / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored == {"SECRET_KEY": first["SECRET_KEY"], "JWT_SECRET_KEY": first["JWT_SECRET_KEY"]}
    assert min(len(v) for v in stored.values()) >= 32 and first["SECRET_KEY"] != first["JWT_SECRET_KEY"]
    # The next start reuses them: sessions survive a restart.
    again = create_app().config
    assert (again["SECRET_KEY"], again["JWT_SECRET_KEY"]) == (first["SECRET_KEY"], first["JWT_SECRET_KEY"])
    # A configured secret wins and is not written to the file.
    assert create_app({"SECRET_KEY": STRONG}).config["SECRET_KEY"] == STRONG
    assert json.loads(path.read_text()) == stored


def test_processes_starting_together_agree_on_the_generated_secrets(instance, tmp_path):
    """Workers started at once on a fresh instance must not each generate their own secret."""
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from app import create_app
        Path(sys.argv[1]).touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.005)
        print(create_app().config["SECRET_KEY"])
    """)
    env = dict(os.environ)  # with this test's LUNAOS_INSTANCE_PATH and PYTHONPATH (the sample plugin)
    ready = [tmp_path / f"ready-{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in ready]
    try:
        # Hold them at a barrier once imported, then release them all at once.
        deadline = time.monotonic() + 300  # only against a hang; no duration is asserted
        while not all(r.exists() for r in ready):
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
            assert time.monotonic() < deadline, "processes never reached the barrier"
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * len(procs), [err[-2000:] for _, err in outputs]
    keys = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert keys == {json.loads((instance / "secrets.json").read_text())["SECRET_KEY"]}
