"""HTTP benchmark: the full LunaOS middleware stack against a bare Flask app.

    python -m bench.http                       # sync and gevent, 3 runs of 10 s each
    python -m bench.http --classes gevent --repeat 5 --json bench/results/http.json
    python -m bench.http --help

Both apps are served, one at a time, by gunicorn with the project's
`gunicorn.conf.py` and the same settings (worker class, workers, keep-alive,
preload...), and driven by the same wrk command from this machine:

- bare Flask (`bench/bare_app.py`) `GET /`: the ceiling;
- the full app (`wsgi:app`) `GET /health` and `GET /`: a small JSON GET through
  every middleware: Talisman headers, CORS (the request carries the desktop
  client's Origin), the rate limiter on Redis (checked on every request, with a
  budget too large to be hit), request id, Server-Timing and one JSON access
  log line per request (written to a file, as a log collector would read it).

Each run starts bare Flask, measures its saturation throughput (closed loop,
wrk) and its latency at a fixed rate of half that throughput (open loop, see
`bench/_load.py`), stops it, then does the same for the full app at the same
fixed rate. Ratios are taken within a run; the table shows the median over the
runs and the spread (min-max) across them.

The database is SQLite in a private temporary instance directory unless
`--database postgresql` is given: neither measured route queries a table, and
`/health` runs `SELECT 1` at most once per second per worker (its result is
cached), so the database does not move these numbers; SQLite keeps the
benchmark free of set-up. Redis is required: the limiter on Redis is part of
what is measured.

Exit status: 0 after a complete run (with `--check`: only if every goal is met),
1 when `--check` finds a goal missed, 2 when set-up fails. Servers, temporary
files, the Redis keys and the PostgreSQL database it made are removed in every
case.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

from ._load import LoadError, Wrk, WrkResult, children, wrk_version

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://localhost:1420"  # the desktop client's origin: CORS does its full work
GOAL_THROUGHPUT = 0.70  # full stack >= 70% of bare Flask's requests/s
GOAL_P99_RATIO = 1.5  # full stack p99 <= 1.5x bare Flask's
GOAL_FIXED_P99_MS = 25.0  # p99 at half of bare Flask's saturation rate
# Headers the full app must send, checked before measuring (a broken stack must not look fast).
REQUIRED_HEADERS = ("X-Request-ID", "Server-Timing", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                    "X-RateLimit-Reset", "Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
                    "Referrer-Policy", "Cross-Origin-Opener-Policy", "Cross-Origin-Resource-Policy",
                    "Access-Control-Allow-Origin", "Access-Control-Expose-Headers")
# Settings the harness itself decides; the caller's other GUNICORN_* variables pass through.
_OWN_GUNICORN = ("GUNICORN_WORKER_CLASS", "GUNICORN_WORKERS", "GUNICORN_BIND")
_APP_ENV = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")


class SetupError(RuntimeError):
    """Anything that keeps the benchmark from measuring what it claims to: exit status 2."""


@dataclass(frozen=True)
class Target:
    server: str  # "bare" or "full"
    path: str

    @property
    def label(self) -> str:
        return f"{self.server} GET {self.path}"


BARE_APP = "bench.bare_app:app"
FULL_APP = "wsgi:app"
TARGETS = {"bare": (Target("bare", "/"),), "full": (Target("full", "/health"), Target("full", "/"))}
OWN_LABEL = "full GET / (own)"  # fixed rate relative to the full stack's own saturation


# ----------------------------------------------------------------------------- resources


@dataclass
class Resources:
    """Temporary instance dir, database and Redis prefix; `close()` removes them all."""

    args: argparse.Namespace
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-http-")))
    database_url: str = ""
    pg_database: str | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"bench-{self.token}:"

    def open(self) -> None:
        import redis

        (self.tmp / "instance").mkdir()
        try:
            client = redis.Redis.from_url(self.args.redis_url, socket_connect_timeout=2)
            client.ping()
        except Exception as error:
            raise SetupError(f"Redis at {self.args.redis_url} is not reachable ({error}); "
                             "start it or pass --redis-url") from None
        self.cleanups.append(lambda: self._drop_redis_keys(client))
        if self.args.database == "postgresql":
            self._create_pg()
        else:
            self.database_url = f"sqlite:///{self.tmp / 'instance' / 'bench.db'}"

    def _create_pg(self) -> None:
        import psycopg

        name = f"lunaos_bench_{self.token}"
        try:
            with psycopg.connect(self.args.pg_admin_dsn, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except Exception as error:
            raise SetupError(f"cannot create PostgreSQL database via {self.args.pg_admin_dsn!r}: {error}") from None
        self.pg_database = name
        params = psycopg.conninfo.conninfo_to_dict(self.args.pg_admin_dsn)
        host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
        user = f"{params['user']}@" if params.get("user") else ""
        self.database_url = f"postgresql://{user}{host}:{port}/{name}"

        def drop() -> None:
            with psycopg.connect(self.args.pg_admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        self.cleanups.append(drop)

    def _drop_redis_keys(self, client: Any) -> None:
        # Only keys naming our prefix (limits puts "LIMITS:LIMITER/" before it); the server is shared: no FLUSHDB.
        keys = list(client.scan_iter(match=f"*{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)

    def redis_keys(self) -> int:
        import redis

        client = redis.Redis.from_url(self.args.redis_url)
        return sum(1 for _ in client.scan_iter(match=f"*{self.prefix}*", count=1000))

    def redis_pid(self) -> int | None:
        import redis

        try:
            return int(redis.Redis.from_url(self.args.redis_url).info("server")["process_id"])
        except Exception:
            return None

    def env(self, worker_class: str, workers: int, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LUNAOS_") and k not in _APP_ENV and k not in _OWN_GUNICORN}
        env.update(
            GUNICORN_WORKER_CLASS=worker_class,
            GUNICORN_WORKERS=str(workers),
            GUNICORN_BIND=f"127.0.0.1:{port}",
            LUNAOS_INSTANCE_PATH=str(self.tmp / "instance"),
            DATABASE_URL=self.database_url,
            REDIS_URL=self.args.redis_url,
            LUNAOS_REDIS_KEY_PREFIX=self.prefix,
            # Checked on every request, never hit: the cost of limiting without 429s.
            LUNAOS_RATELIMIT_ANONYMOUS=self.args.anonymous_limit,
            LUNAOS_RATELIMIT_LEASE=str(self.args.lease),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        return env

    def migrate(self) -> None:
        env = self.env("sync", 1, 0)
        proc = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade", "heads"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise SetupError(f"`flask db upgrade heads` failed:\n{proc.stderr[-2000:]}")

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as error:  # keep cleaning up the rest
                print(f"warning: cleanup failed: {error}", file=sys.stderr)
        if not self.args.keep:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


class Server:
    """One gunicorn master and its workers in their own process group."""

    def __init__(self, app: str, worker_class: str, workers: int, resources: Resources):
        self.app, self.worker_class, self.workers = app, worker_class, workers
        self.port = _free_port()
        self.log_path = resources.tmp / f"{app.split(':')[0]}-{worker_class}-{self.port}.log"
        self.env = resources.env(worker_class, workers, self.port)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "wb") as log:
            # The server's stderr carries the JSON access log: to a file, logging stays on.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), self.app],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"{self.app} ({self.worker_class}) exited with {self.proc.returncode}:\n"
                                 f"{self.log_tail()}")
            try:
                status, _, _ = _get(self.base + "/", timeout=2)
                if status == 200 and len(children(self.proc.pid)) >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SetupError(f"{self.app} ({self.worker_class}) did not answer within {timeout:.0f} s:\n"
                         f"{self.log_tail()}")

    def pids(self) -> tuple[int, ...]:
        if self.proc is None:
            return ()
        return (self.proc.pid, *children(self.proc.pid))

    def log_tail(self, size: int = 3000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-size:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGINT: gunicorn's quick shutdown; then the whole group, whatever is left of it.
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # workers orphaned by a killed master
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def check_full(server: Server, resources: Resources) -> None:
    """The stack under test really does its work: headers, limiter on Redis, JSON access log."""
    status, headers, body = _get(server.base + "/", {"Origin": ORIGIN})
    if status != 200:
        raise SetupError(f"full app GET / answered {status}: {body[:300]!r}")
    missing = [name for name in REQUIRED_HEADERS if name not in headers]
    if missing:
        raise SetupError(f"full app GET / lacks headers {missing}; the middleware is not all on")
    status, _, body = _get(server.base + "/health")
    report = json.loads(body or b"{}")
    if status != 200 or report.get("services", {}).get("redis") != "ok":
        raise SetupError(f"full app /health answered {status}: {body[:300]!r}")
    if resources.redis_keys() == 0:
        raise SetupError(f"no rate-limit keys under {resources.prefix!r} in Redis: the limiter is not on Redis")
    time.sleep(0.2)
    lines = [ln for ln in server.log_tail(20000).splitlines() if ln.startswith("{")]
    access = [json.loads(ln) for ln in lines if '"request_id"' in ln]
    if not any(entry.get("path") == "/" and entry.get("status") == 200 for entry in access):
        raise SetupError("no JSON access-log line for GET / in the server's stderr: logging is off")


def check_bare(server: Server) -> None:
    status, _, body = _get(server.base + "/", {"Origin": ORIGIN})
    if status != 200:
        raise SetupError(f"bare app GET / answered {status}: {body[:300]!r}")


# ----------------------------------------------------------------------------- measuring


@dataclass
class RunResult:
    """One repetition for one worker class: every target at saturation and at the fixed rate."""

    worker_class: str
    repeat: int
    saturation: dict[str, WrkResult] = field(default_factory=dict)  # by target label
    fixed: dict[str, WrkResult] = field(default_factory=dict)  # by fixed-rate label
    fixed_rate: float = 0.0  # rate_fraction x bare Flask's saturation throughput in this run


@contextmanager
def _serve(app: str, worker_class: str, resources: Resources, args: argparse.Namespace,
           active: list[Server]) -> Iterator[Server]:
    server = Server(app, worker_class, args.workers, resources)
    active.append(server)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        active.remove(server)


def measure_one(worker_class: str, repeat: int, args: argparse.Namespace, resources: Resources, wrk: Wrk,
                active: list[Server], progress: Callable[[str], None]) -> RunResult:
    run = RunResult(worker_class, repeat)
    redis_pid = resources.redis_pid()
    for name, app in (("bare", BARE_APP), ("full", FULL_APP)):
        with _serve(app, worker_class, resources, args, active) as server:
            (check_bare(server) if name == "bare" else check_full(server, resources))
            watch, others = server.pids(), ((redis_pid,) if redis_pid else ())
            for target in TARGETS[name]:
                url = server.base + target.path
                wrk.saturate(url, duration_s=args.warmup, connections=args.connections, threads=args.threads)
                result = wrk.saturate(url, duration_s=args.duration, connections=args.connections,
                                      threads=args.threads, watch_pids=watch, other_pids=others)
                run.saturation[target.label] = result
                progress(f"{worker_class} run {repeat}: {target.label} saturation {result.rps:,.0f} req/s, "
                         f"p99 {result.p99_ms:.1f} ms")
            if name == "bare":
                # Half of this run's bare saturation: the same offered load for both apps.
                run.fixed_rate = args.rate_fraction * run.saturation[TARGETS["bare"][0].label].rps
            fixed = [(target, target.label, run.fixed_rate) for target in TARGETS[name]]
            if name == "full" and args.own_rate:
                # The same fraction of the full stack's own capacity: what its users see at that utilisation.
                own = TARGETS["full"][-1]
                fixed.append((own, OWN_LABEL, args.rate_fraction * run.saturation[own.label].rps))
            for target, label, rate in fixed:
                result = wrk.fixed_rate(server.base + target.path, rate=rate, duration_s=args.fixed_duration,
                                        connections=args.fixed_connections, threads=args.threads,
                                        arrivals=args.arrivals, watch_pids=watch, other_pids=others)
                run.fixed[label] = result
                progress(f"{worker_class} run {repeat}: {label} at {rate:,.0f} req/s: "
                         f"p99 {result.p99_ms:.1f} ms (late sends: {result.late})")
    return run


# ----------------------------------------------------------------------------- reporting


def _spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    """Medians and spreads per worker class and target; ratios are within a run."""
    out: dict[str, Any] = {}
    bare_label = TARGETS["bare"][0].label
    for worker_class in dict.fromkeys(r.worker_class for r in runs):
        mine = [r for r in runs if r.worker_class == worker_class]
        saturation = {}
        for target in (*TARGETS["bare"], *TARGETS["full"]):
            sat = [r.saturation[target.label] for r in mine]
            saturation[target.label] = {
                "rps": [s.rps for s in sat],
                "p50_ms": [s.p50_ms for s in sat],
                "p99_ms": [s.p99_ms for s in sat],
                "throughput_ratio": [s.rps / r.saturation[bare_label].rps for s, r in zip(sat, mine, strict=True)],
                "p99_ratio": [s.p99_ms / r.saturation[bare_label].p99_ms for s, r in zip(sat, mine, strict=True)],
                "server_cpu_us": [s.server_cpu_us or 0.0 for s in sat],
                "redis_cpu_us": [s.redis_cpu_us or 0.0 for s in sat],
                "errors": sum(s.error_count for s in sat),
                "foreign_cpu": [s.foreign_cpu or 0.0 for s in sat],
            }
        fixed = {}
        for label in mine[0].fixed:
            results = [r.fixed[label] for r in mine]
            fixed[label] = {
                "target_rps": [f.target_rps or 0.0 for f in results],
                "rps": [f.rps for f in results],
                "p50_ms": [f.p50_ms for f in results],
                "p99_ms": [f.p99_ms for f in results],
                "co_p99_ms": [f.co_p99_ms for f in results],
                "late": [f.late for f in results],
                "errors": sum(f.error_count for f in results),
                "foreign_cpu": [f.foreign_cpu or 0.0 for f in results],
            }
        out[worker_class] = {"saturation": saturation, "fixed": fixed}
    return out


def goals(summary: dict[str, Any]) -> list[tuple[str, str, bool]]:
    checks = []
    for worker_class, tables in summary.items():
        full = tables["saturation"][Target("full", "/").label]
        thr = statistics.median(full["throughput_ratio"])
        p99r = statistics.median(full["p99_ratio"])
        checks.append((worker_class, f"full GET / throughput {thr:.0%} of bare (goal >= {GOAL_THROUGHPUT:.0%})",
                       thr >= GOAL_THROUGHPUT))
        checks.append((worker_class, f"full GET / p99 {p99r:.2f}x bare (goal <= {GOAL_P99_RATIO}x)",
                       p99r <= GOAL_P99_RATIO))
        for label, row in tables["fixed"].items():
            if not label.startswith("full") or label == OWN_LABEL:
                continue
            p99 = statistics.median(row["co_p99_ms"])
            rate = statistics.median(row["target_rps"])
            text = f"{label} p99 {p99:.1f} ms at {rate:,.0f} req/s (goal < {GOAL_FIXED_P99_MS:g} ms)"
            checks.append((worker_class, text, p99 < GOAL_FIXED_P99_MS))
        errors = sum(row["errors"] for table in tables.values() for row in table.values())
        checks.append((worker_class, f"{errors} failed requests (socket errors, timeouts, HTTP >= 400)",
                       errors == 0))
    return checks


def render(summary: dict[str, Any], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    n = args.repeat
    spread = "median [min-max] of " + (f"{n} runs" if n > 1 else "1 run")
    lines = [
        f"LunaOS HTTP benchmark: gunicorn, {args.workers} workers, same settings for both apps; wrk -t{args.threads} "
        f"-c{args.connections}, {args.duration:g} s per measurement; {spread}",
        f"machine: {meta['cpus']} CPUs, load average {meta['loadavg_before']} at start; database {args.database}; "
        f"limiter on Redis (lease {args.lease:g}); access log: JSON lines to a file",
        "",
        "Saturation (closed loop). Ratios: full / bare Flask within the same run.",
        f"{'class':<8} {'route':<17} {'req/s':<22} {'p50 ms':<7} {'p99 ms':<21} {'thr/bare':<17} {'p99/bare':<18} "
        f"{'CPU us/req':<10}",
    ]
    for worker_class, tables in summary.items():
        for label, row in tables["saturation"].items():
            lines.append(
                f"{worker_class:<8} {label:<17} {_spread(row['rps'], ',.0f'):<22} "
                f"{statistics.median(row['p50_ms']):<7.2f} {_spread(row['p99_ms'], '.1f'):<21} "
                f"{_spread(row['throughput_ratio'], '.2f'):<17} {_spread(row['p99_ratio'], '.2f'):<18} "
                f"{statistics.median(row['server_cpu_us']):<10.0f}"
            )
    lines += [
        "CPU us/req: CPU time of the server's processes per request (Redis not included); unlike latency, it",
        "hardly moves when other work shares the machine.",
        "",
        f"Fixed rate (open loop, {args.arrivals} arrivals, -c{args.fixed_connections}, {args.fixed_duration:g} s) at "
        f"{args.rate_fraction:.0%} of that run's bare Flask saturation throughput;",
        f"'{OWN_LABEL}': at {args.rate_fraction:.0%} of the full stack's own saturation throughput instead.",
        "p99*: bound that also counts sends delayed because every connection was busy (inf: too many to bound).",
        f"{'class':<8} {'route':<17} {'offered req/s':<15} {'achieved':<9} {'p50 ms':<7} {'p99 ms':<21} "
        f"{'p99* ms':<9} {'late':<6}",
    ]
    for worker_class, tables in summary.items():
        for label, row in tables["fixed"].items():
            lines.append(
                f"{worker_class:<8} {label:<17} {statistics.median(row['target_rps']):<15,.0f} "
                f"{statistics.median(row['rps']):<9,.0f} {statistics.median(row['p50_ms']):<7.2f} "
                f"{_spread(row['p99_ms'], '.1f'):<21} {statistics.median(row['co_p99_ms']):<9.1f} "
                f"{sum(row['late']):<6}"
            )
    lines += ["", "Goals (medians):"]
    for worker_class, text, ok in goals(summary):
        lines.append(f"  {'PASS' if ok else 'FAIL'}  {worker_class:<8} {text}")
    foreign = max(v for tables in summary.values() for table in tables.values() for row in table.values()
                  for v in row["foreign_cpu"])
    if foreign > 0.15:
        lines.append(f"\nnote: other processes used up to {foreign:.2f} CPU cores during some measurements "
                     "(the machine was shared); expect more spread than usual.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http",
        description="Full LunaOS middleware stack vs bare Flask under the same gunicorn settings (wrk).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--classes", default="sync,gevent",
                        help="comma-separated gunicorn worker classes to compare (sync, gevent, gthread)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (GUNICORN_WORKERS)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per saturation measurement")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs per worker class (servers restarted each run)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections at saturation")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rate-fraction", type=float, default=0.5,
                        help="fixed rate as a fraction of bare Flask's saturation throughput")
    parser.add_argument("--fixed-duration", type=float, default=10, help="seconds per fixed-rate measurement")
    parser.add_argument("--fixed-connections", type=int, default=32,
                        help="wrk connections at the fixed rate (enough that none is busy when a send is due)")
    parser.add_argument("--no-own-rate", dest="own_rate", action="store_false",
                        help="skip the extra fixed-rate run of the full app at a fraction of its own saturation")
    parser.add_argument("--arrivals", choices=("poisson", "uniform"), default="poisson",
                        help="fixed-rate arrival process: Poisson (independent clients) or evenly spaced (wrk2)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the full app's database (its own, created and removed by the benchmark)")
    parser.add_argument("--pg-admin-dsn", default="host=127.0.0.1 port=5432 dbname=test",
                        help="where to CREATE/DROP the benchmark's PostgreSQL database")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                        help="Redis for the limiter (keys under a private bench-<random>: prefix, removed after)")
    parser.add_argument("--anonymous-limit", default="10000000/minute",
                        help="LUNAOS_RATELIMIT_ANONYMOUS for the run: checked on every request, never hit")
    parser.add_argument("--lease", type=float, default=0.01,
                        help="LUNAOS_RATELIMIT_LEASE: share of the limit a worker takes from Redis at once "
                             "(capped at 100 admissions); 0 asks Redis on every request")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement and the summary as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every goal is met")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    args.classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = set(args.classes) - {"sync", "gevent", "gthread"}
    if unknown:
        parser.error(f"unknown worker class(es): {', '.join(sorted(unknown))}")
    if args.repeat < 1 or args.workers < 1 or args.duration <= 0 or not 0 < args.rate_fraction <= 1:
        parser.error("--repeat and --workers must be >= 1, --duration > 0, 0 < --rate-fraction <= 1")
    return args


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version(), "wrk": wrk_version()}
    for dist in ("gunicorn", "gevent", "flask", "limits", "flask-talisman", "flask-cors", "redis"):
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:
            found[dist] = "absent"
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(f"[bench] {msg}", file=sys.stderr,
                                                                          flush=True))
    # A TERM (CI timeout, kill) must still run the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    resources = Resources(args)
    active: list[Server] = []
    wrk: Wrk | None = None
    try:
        wrk = Wrk(headers={"Origin": ORIGIN})
        meta = {"cpus": os.cpu_count(), "loadavg_before": " ".join(f"{v:.2f}" for v in os.getloadavg()),
                "versions": _versions(),
                "gunicorn_env": {k: v for k, v in os.environ.items() if k.startswith("GUNICORN_")
                                 and k not in _OWN_GUNICORN}}
        resources.open()
        resources.migrate()
        runs = []
        for worker_class in args.classes:
            for repeat in range(1, args.repeat + 1):
                runs.append(measure_one(worker_class, repeat, args, resources, wrk, active, progress))
    except (SetupError, LoadError) as error:
        print(f"bench.http: set-up failed: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.http: interrupted", file=sys.stderr)
        return 130
    finally:
        for server in list(active):
            server.stop()
        resources.close()
        if wrk is not None:
            wrk.close()
    summary = summarize(runs)
    print(render(summary, args, meta))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "settings": {k: v for k, v in vars(args).items() if k not in ("json",)},
            "meta": meta,
            "summary": summary,
            "goals": [{"class": c, "goal": t, "met": ok} for c, t, ok in goals(summary)],
            "runs": [{"class": r.worker_class, "repeat": r.repeat, "fixed_rate": r.fixed_rate,
                      "saturation": {k: v.as_dict() for k, v in r.saturation.items()},
                      "fixed": {k: v.as_dict() for k, v in r.fixed.items()}} for r in runs],
        }
        path.write_text(json.dumps(payload, indent=2, default=str))
    if args.check and not all(ok for _, _, ok in goals(summary)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
