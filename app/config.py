"""Configuration: defaults, then instance/config.py, then the environment.

Order (later wins): `Defaults` below, plugin defaults (only keys not yet set),
`instance/config.py`, `LUNAOS_*` environment variables (JSON-decoded by
`from_prefixed_env`), the unprefixed standard names `DATABASE_URL`,
`REDIS_URL` and `SECRET_KEY` when their `LUNAOS_` twin is absent, and last the
mapping given to `create_app(config)`.
"""
from __future__ import annotations

import copy
import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

PREFIX = "LUNAOS"
STANDARD_NAMES = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")
# Keys of other libraries that may be set through LUNAOS_ without being declared here.
EXTENSION_PREFIXES = ("SQLALCHEMY_", "JWT_", "RATELIMIT_", "API_", "OPENAPI_", "SESSION_", "CORS_")
# Secrets the core needs; plugins add theirs through `Plugin.secrets`.
CORE_SECRETS = ("SECRET_KEY", "JWT_SECRET_KEY")
_WEAK_SECRETS = {"", "dev", "development", "secret", "changeme", "change-me", "please-change-me", "test"}
MIN_SECRET_LENGTH = 32
DESKTOP_ORIGINS = ["http://localhost:1420", "http://tauri.localhost", "tauri://localhost"]
ENVIRONMENTS = ("development", "production")
# Read by create_app itself (before the config exists), so it is a known name.
BOOTSTRAP_NAMES = {"INSTANCE_PATH"}


class ConfigError(RuntimeError):
    """Raised at start-up for a missing, unknown or malformed setting."""


class Defaults:
    ENV = "development"
    SECRET_KEY: str | None = None
    JWT_SECRET_KEY: str | None = None
    DATABASE_URL: str | None = None  # default: sqlite:///<instance>/lunaos.db
    REDIS_URL: str | None = None  # unset: in-memory limiter, in-process jobs and events
    PLUGINS: list[str] | None = None  # allow-list; None = every installed plugin
    DISABLED_PLUGINS: list[str] = []
    PLUGINS_STRICT = True
    CORS_ORIGINS: list[str] = DESKTOP_ORIGINS
    FORCE_HTTPS = False
    PROXY_FIX = 0  # number of trusted proxies in front (X-Forwarded-For/Proto/Host)
    MAX_CONTENT_LENGTH = 10 * 1024 * 1024
    ADMIN_ONLY_SCOPES: list[str] = []  # beyond admin:*, scopes only admins' sessions carry
    RATELIMIT_ENABLED = True
    RATELIMIT_STRATEGY = "fixed-window"
    RATELIMIT_LEASE = 0.01  # share of a fixed-window limit a worker takes from Redis at once; 0: every request
    RATELIMIT_ANONYMOUS = "60/minute"
    RATELIMIT_TIERS = {"free": "60/minute", "pro": "600/minute", "team": "6000/minute"}
    LOG_LEVEL = "INFO"
    LOG_JSON = True
    LOG_FLUSH_SECONDS = 0.2  # access lines are written in batches at most this old; 0: each at once
    HEALTH_CACHE_SECONDS = 1.0
    JOBS_INPROCESS_THREADS = 4
    JOBS_QUEUE = "lunaos"
    JOBS_DEFAULT_TIMEOUT = 3600  # seconds a job may run (RQ kills it; in-process it is asked to stop)
    JOBS_HEARTBEAT_SECONDS = 10.0  # how often a running (or locally queued) job's heartbeat is written
    JOBS_ABANDONED_AFTER = 60  # RQ execution heartbeat TTL: a worker silent this long is dead
    JOBS_STALE_AFTER = 120.0  # a queued/running row whose heartbeat is older than this is reaped
    JOBS_REAP_INTERVAL = 60.0  # how often workers (and in-process servers) run the reaper
    JOBS_PROGRESS_INTERVAL = 0.5  # min seconds between progress writes/events of one job
    JOBS_CANCEL_CHECK_SECONDS = 1.0  # min seconds between the database reads of ctx.cancelled()
    SSE_HEARTBEAT_SECONDS = 15.0
    REDIS_KEY_PREFIX = "lunaos:"
    # POST + Idempotency-Key (app/idempotency.py): how long an answer is replayed, how long a running
    # first request holds its key (a crashed worker's claim lapses then), the largest answer stored.
    IDEMPOTENCY_TTL = 86400
    IDEMPOTENCY_LOCK_SECONDS = 300
    IDEMPOTENCY_MAX_RESPONSE_BYTES = 1024 * 1024
    # Language model providers (app/llm). LLM_PROVIDERS: JSON list of {name, type, base_url, api_key,
    # models, priority, timeout, context_window}; empty: OPENAI_API_KEY / ANTHROPIC_API_KEY, else offline.
    LLM_PROVIDERS: list | str | None = None  # a JSON string is decoded (and checked) by app/llm/config.py
    LLM_STRATEGY = "priority"  # priority | round_robin | least_loaded | fastest
    LLM_TIMEOUT = 60.0  # seconds per upstream call (a provider's own "timeout" wins)
    LLM_RETRIES = 1  # extra passes over the providers after every one failed
    LLM_RETRY_BACKOFF_SECONDS = 0.25  # first pause between passes; doubles each pass, with jitter
    LLM_FAILURE_THRESHOLD = 3  # consecutive failures that make a provider cool down
    LLM_COOLDOWN_SECONDS = 30.0  # then one probe request may bring it back
    LLM_OFFLINE = True  # nothing configured: use the in-process SmolLM2 (llama-cpp-python) when installed
    LLM_USAGE_FLUSH_SECONDS = 1.0  # token usage is written in batches at most this long after a request
    OPENAI_API_KEY: str | None = None
    ANTHROPIC_API_KEY: str | None = None
    API_TITLE = "LunaOS"
    API_VERSION = "v1"
    OPENAPI_VERSION = "3.1.0"


def _default_types() -> dict[str, type]:
    types: dict[str, type] = {}
    for key, value in vars(Defaults).items():
        if key.isupper() and value is not None:
            types[key] = type(value)
    types.update(PLUGINS=list, DATABASE_URL=str, REDIS_URL=str, SECRET_KEY=str, JWT_SECRET_KEY=str)
    return types


def load(app: Flask, overrides: dict[str, Any] | None) -> None:
    """Fill `app.config` in the documented order (plugin defaults come later)."""
    app.config.from_object(Defaults)
    # from_object copies references: without copies, a nested env setting
    # (LUNAOS_RATELIMIT_TIERS__free) would edit `Defaults` for every later app.
    for key, value in app.config.items():
        if isinstance(value, (dict, list)):
            app.config[key] = copy.deepcopy(value)
    app.config.from_pyfile("config.py", silent=True)
    # from_prefixed_env puts every LUNAOS_* name into app.config, typos included,
    # so check() compares against the names known before the environment is read.
    app.extensions["lunaos.config.declared"] = set(app.config) | BOOTSTRAP_NAMES
    app.config.from_prefixed_env(PREFIX)
    for name in STANDARD_NAMES:
        if f"{PREFIX}_{name}" not in os.environ and os.environ.get(name):
            app.config[name] = os.environ[name]
    if overrides:
        app.config.update(overrides)
    for key in ("PLUGINS", "DISABLED_PLUGINS", "CORS_ORIGINS"):
        app.config[key] = as_list(app.config.get(key))
    app.config["PLUGINS"] = app.config["PLUGINS"] or None
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri(app)
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"]))
    app.config["RATELIMIT_STORAGE_URI"] = app.config.get("REDIS_URL") or "memory://"


def as_list(value: Any) -> list[str]:
    """Accept a JSON list or a comma-separated string (the friendlier spelling in an env file)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(v) for v in value]


def is_production(app: Flask) -> bool:
    return str(app.config.get("ENV", "development")).lower() == "production"


def database_uri(app: Flask) -> str:
    url = app.config.get("DATABASE_URL") or f"sqlite:///{Path(app.instance_path) / 'lunaos.db'}"
    # psycopg 3 is the driver (it cooperates with gevent); accept the common spellings.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_options(uri: str) -> dict[str, Any]:
    if uri.startswith("sqlite"):
        # One connection per thread/greenlet; WAL and a busy timeout keep writers from failing.
        return {"connect_args": {"timeout": 15}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20, "pool_recycle": 1800}


def check(app: Flask, plugin_config: dict[str, Any], plugin_secrets: tuple[str, ...]) -> None:
    """Refuse unknown LUNAOS_* names, values of the wrong type and, in production, weak secrets."""
    types = _default_types()
    for key, value in plugin_config.items():
        if value is not None:
            types[key] = type(value)
    # A plugin setting whose default is None is still a known name (its type is free).
    known = set(types) | set(plugin_config) | app.extensions.get("lunaos.config.declared", set(app.config))
    # Settings of an installed plugin that is disabled (or failed, when not strict)
    # are not declared this run, but leaving them in the environment is no mistake.
    plugin_set = app.extensions.get("lunaos.plugins")
    idle = tuple(f"{s.name.upper()}_" for s in (plugin_set.statuses.values() if plugin_set else ())
                 if s.status != "loaded")
    problems = []
    for env_name in sorted(os.environ):
        if not env_name.startswith(PREFIX + "_"):
            continue
        key = env_name[len(PREFIX) + 1:].split("__")[0]  # KEY__sub sets a nested value
        if key not in known and not key.startswith(EXTENSION_PREFIXES + idle):
            problems.append(f"{env_name}: unknown setting (check the spelling; see README 'Configuration')")
    if str(app.config.get("ENV")).lower() not in ENVIRONMENTS:
        # A typo such as "prod" would otherwise start in development mode with generated secrets.
        problems.append(f"{PREFIX}_ENV: must be one of {', '.join(ENVIRONMENTS)}, got {app.config.get('ENV')!r}")
    for key, expected in types.items():
        value = app.config.get(key)
        if value is None:
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            app.config[key] = float(value)
            continue
        if expected is list and isinstance(value, (list, tuple)):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            shown = json.dumps(value, default=str)[:60]
            problems.append(f"{PREFIX}_{key}: expected {expected.__name__}, got {type(value).__name__} {shown}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    _check_secrets(app, CORE_SECRETS + tuple(plugin_secrets))


def _check_secrets(app: Flask, names: tuple[str, ...]) -> None:
    if is_production(app):
        bad = [n for n in names if _weak(app.config.get(n))]
        if bad:
            raise ConfigError(
                "production start-up refused: "
                + "; ".join(f"set {PREFIX}_{n} to a random value of at least {MIN_SECRET_LENGTH} characters"
                            for n in bad)
                + " (e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return
    # Development: generate missing secrets once and keep them in instance/, so a restart
    # keeps sessions valid and no shared, published default ever signs a token.
    missing = [n for n in names if not app.config.get(n)]
    if not missing:
        return
    path = Path(app.instance_path) / "secrets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several processes may start at once on a fresh instance (gunicorn workers without
    # preload, a worker beside the server): they must agree on one secret, so the
    # read-generate-write happens under an exclusive lock.
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        changed = False
        for name in missing:
            if name not in stored:
                stored[name] = secrets.token_urlsafe(48)
                changed = True
            app.config[name] = stored[name]
        if changed:
            tmp = path.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            # Created 0600, never readable by others even for a moment.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(stored, indent=2))
            tmp.replace(path)


def _weak(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    return value.strip().lower() in _WEAK_SECRETS or len(value) < MIN_SECRET_LENGTH
