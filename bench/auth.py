"""Authenticated requests under gunicorn: `GET /v1/auth/me` with an API key and with a
session token, against `/health` and bare Flask in the same run; plus the cost of
verifying a cached key or token in-process, and of a login (argon2id).

    python -m bench.auth [--classes gevent,sync] [--repeat 3] [--duration 10]

Goals (issue 3): an authenticated request keeps >= 60% of bare Flask's throughput,
and key verification adds < 1 ms p50 once cached.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench._load import Wrk, WrkResult
from bench.http import BARE_APP, FULL_APP, ROOT, Resources, Server, SetupError, check_bare

PASSWORD = "Bench-Password-2026"
UNLIMITED = "10000000/minute"  # checked on every request, never hit


@dataclass
class Row:
    worker_class: str
    label: str
    result: WrkResult


class AuthResources(Resources):
    def env(self, worker_class: str, workers: int, port: int) -> dict[str, str]:
        env = super().env(worker_class, workers, port)
        env["LUNAOS_RATELIMIT_TIERS"] = json.dumps({"free": UNLIMITED, "pro": UNLIMITED, "team": UNLIMITED})
        env["LUNAOS_AUTH_ACCESS_TOKEN_MINUTES"] = "240"
        env["LUNAOS_SECRET_KEY"] = "bench-secret-" + "s" * 40
        env["LUNAOS_JWT_SECRET_KEY"] = "bench-jwt-" + "j" * 40
        env["LUNAOS_KEYS_PEPPER"] = "bench-pepper-" + "p" * 40
        return env


def _post(url: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def credentials(server: Server, resources: Resources) -> tuple[str, str]:
    """A user (created with the CLI, as an operator would) with a session token and an API key."""
    email = f"bench-{resources.token}@example.com"
    proc = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "users", "create", email,
                           "--password-stdin"], input=PASSWORD + "\n", text=True, capture_output=True,
                          cwd=ROOT, env=server.env, timeout=120)
    # Later runs (servers restarted, same database) find the account already there.
    if proc.returncode != 0 and "already exists" not in proc.stderr:
        raise SetupError(f"`flask users create` failed: {proc.stderr[-1000:]}")
    session = _post(server.base + "/v1/auth/login", {"email": email, "password": PASSWORD})
    key = _post(server.base + "/v1/api-keys", {"name": "bench", "scopes": ["keys:read"], "rate_limit": UNLIMITED},
                session["access_token"])
    return session["access_token"], key["key"]


def measure(args: argparse.Namespace, resources: AuthResources) -> list[Row]:
    rows: list[Row] = []
    for worker_class in args.classes:
        for repeat in range(args.repeat):
            for app in (BARE_APP, FULL_APP):
                server = Server(app, worker_class, args.workers, resources)
                try:
                    server.start()
                    if app == BARE_APP:
                        check_bare(server)
                        targets = [("bare GET /", "/", None)]
                    else:
                        jwt, key = credentials(server, resources)
                        targets = [("full GET /health", "/health", None), ("me with API key", "/v1/auth/me", key),
                                   ("me with JWT", "/v1/auth/me", jwt)]
                    for label, path, token in targets:
                        wrk = Wrk({"Authorization": f"Bearer {token}"} if token else {})
                        try:
                            url = server.base + path
                            wrk.saturate(url, duration_s=args.warmup, connections=args.connections,
                                         threads=args.threads)
                            result = wrk.saturate(url, duration_s=args.duration, connections=args.connections,
                                                  threads=args.threads, watch_pids=server.pids())
                        finally:
                            wrk.close()
                        if result.error_count:
                            raise SetupError(f"{label}: {result.errors} (the route must answer 200)")
                        rows.append(Row(worker_class, label, result))
                        print(f"{worker_class} run {repeat + 1}: {label}: {result.rps:,.0f} req/s", file=sys.stderr)
                finally:
                    server.stop()
    return rows


def in_process(resources: AuthResources) -> dict[str, float]:
    """Resolver costs with a warm cache (Redis), and argon2id at the default (production) cost."""
    os.environ.update({k: v for k, v in resources.env("sync", 1, 0).items() if k.startswith("LUNAOS_")})
    os.environ["LUNAOS_DATABASE_URL"] = resources.database_url
    os.environ["LUNAOS_REDIS_URL"] = resources.args.redis_url
    os.environ["LUNAOS_LOG_LEVEL"] = "WARNING"
    from app import create_app
    from app.security import Principal
    from plugins.auth import passwords
    from plugins.auth import service as auth
    from plugins.keys import service as keys

    app = create_app()
    out: dict[str, float] = {}
    with app.test_request_context("/"):
        user = auth.find_by_email(f"bench-{resources.token}@example.com")
        owner = Principal(kind="user", id=user.id, user_id=user.id, scopes=auth.user_scopes(user))
        _, token = keys.create(owner, name="in-process", scopes=["keys:read"])
        session = auth.tokens.issue(user.id)["access_token"]
        for name, call in (("key verification (cached)", lambda: keys.resolve_key(token)),
                           ("JWT verification (cached)", lambda: auth.resolve_access_token(session))):
            call()
            samples = []
            for _ in range(2000):
                start = time.perf_counter()
                call()
                samples.append((time.perf_counter() - start) * 1e6)
            out[name + " p50 us"] = statistics.median(samples)
        hashed = passwords.hash_password(PASSWORD)
        samples = []
        for _ in range(10):
            start = time.perf_counter()
            passwords.verify_password(hashed, PASSWORD)
            samples.append((time.perf_counter() - start) * 1e3)
        out["argon2id verify p50 ms (login)"] = statistics.median(samples)
        config = app.config
        out["argon2 parameters"] = (f"t={config['AUTH_ARGON2_TIME_COST']}, m={config['AUTH_ARGON2_MEMORY_KIB']} KiB, "
                                    f"p={config['AUTH_ARGON2_PARALLELISM']}")  # type: ignore[assignment]
    return out


def render(rows: list[Row], extra: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"gunicorn, {args.workers} workers; wrk -t{args.threads} -c{args.connections}, {args.duration:g} s; "
             f"median of {args.repeat} run(s); limiter on Redis; JSON access log to a file", "",
             f"{'class':<8} {'route':<18} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'thr/bare':>9} {'CPU us/req':>11}"]
    for worker_class in args.classes:
        by_label: dict[str, list[WrkResult]] = {}
        for row in rows:
            if row.worker_class == worker_class:
                by_label.setdefault(row.label, []).append(row.result)
        bare = statistics.median(r.rps for r in by_label["bare GET /"])
        for label, results in by_label.items():
            rps = statistics.median(r.rps for r in results)
            cpu = statistics.median(r.server_cpu_us or 0 for r in results)
            p50 = statistics.median(r.p50_ms for r in results)
            p99 = statistics.median(r.p99_ms for r in results)
            lines.append(f"{worker_class:<8} {label:<18} {rps:>8,.0f} {p50:>7.2f} {p99:>7.1f} "
                         f"{rps / bare:>9.2f} {cpu:>11.0f}")
    lines.append("")
    for name, value in extra.items():
        lines.append(f"{name}: {value:.1f}" if isinstance(value, float) else f"{name}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--classes", default="gevent", help="comma-separated gunicorn worker classes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-admin-dsn", default="host=127.0.0.1 port=5432 dbname=test")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--anonymous-limit", default=UNLIMITED)
    parser.add_argument("--lease", type=float, default=0.01)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = parser.parse_args(argv)
    args.classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    resources = AuthResources(args)
    try:
        resources.open()
        resources.migrate()
        rows = measure(args, resources)
        extra = in_process(resources)
    except SetupError as error:
        print(f"setup failed: {error}", file=sys.stderr)
        return 2
    finally:
        resources.close()
    print(render(rows, extra, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
