"""AI gateway overhead: the same chat sent straight to an upstream model server and through LunaOS.

    python -m bench.gateway                       # 300 chats + 200 streams per path
    python -m bench.gateway --requests 100 --streams 50 --json bench/results/gateway.json
    python -m bench.gateway --upstream canned     # an upstream that answers at once: the gateway's own cost
    python -m bench.gateway --upstream-url http://127.0.0.1:8080/v1 --model my-model

In one run it starts (unless `--upstream-url` names one) llama-cpp-python's
OpenAI-compatible server over the SmolLM2 GGUF (or, with `--upstream canned`,
bench/canned_upstream.py, whose answer takes no time, so the model's own
variation from request to request does not blur the few milliseconds being
measured), and LunaOS under gunicorn (the
project's gunicorn.conf.py, gevent workers, Redis for limits and key checks,
SQLite) configured with that server as its only provider. A user is created with
the CLI and an API key with the `ai:use` scope through the API, as an operator
would; the key's and the AI group's rate limits are checked on every request
(budgets too large to be hit).

Then, one request at a time on keep-alive connections, it measures:

- non-streamed chat (a short prompt, `max_tokens` small, temperature 0):
  latency of `POST /chat/completions` on the upstream (direct) and of
  `POST /v1/chat/completions` and `POST /v1/ai/chat` through the gateway;
- streamed chat: time to the first token (the first chunk carrying text: an
  OpenAI chunk with non-empty `delta.content`, or a LunaOS `token` event), both
  ways.

Direct and gateway requests are interleaved in a shuffled order within each
round, so the upstream's drift (its prompt cache, the machine's other load)
falls on every path alike. The overhead is gateway minus direct at the same
percentile; the paired column is the median of per-round differences, which
is steadier still. Goals (issue 4; LiteLLM publishes a median overhead of
2-12 ms): p50 overhead <= 3 ms, p99 <= 10 ms, time-to-first-token <= 5 ms.

Exit status: 0 after a complete run (with `--check`: only if every goal is
met), 1 when `--check` finds a goal missed, 2 when set-up fails.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.auth import PASSWORD, UNLIMITED, AuthResources, _post
from bench._load import _CLK_TCK, _proc_ticks
from bench.http import ROOT, Server, SetupError, _free_port

GOAL_P50_MS = 3.0
GOAL_P99_MS = 10.0
GOAL_TTFT_MS = 5.0
PROMPT = [{"role": "user", "content": "Reply with one short sentence: what is a gateway?"}]
DIRECT, OPENAI, LUNAOS = "direct (upstream)", "gateway /v1/chat/completions", "gateway /v1/ai/chat"
PATHS = (DIRECT, OPENAI, LUNAOS)


class GatewayResources(AuthResources):
    """AuthResources (unlimited tiers, fixed secrets) plus the upstream as the only provider."""

    providers: list[dict[str, Any]] = []

    def env(self, worker_class: str, workers: int, port: int) -> dict[str, str]:
        env = super().env(worker_class, workers, port)
        env["LUNAOS_LLM_PROVIDERS"] = json.dumps(self.providers)
        env["LUNAOS_LLM_OFFLINE"] = "false"
        env["LUNAOS_RATELIMIT_AI_FREE"] = UNLIMITED  # checked on every chat, never hit
        env["LUNAOS_LOG_LEVEL"] = "WARNING"
        return env


# ----------------------------------------------------------------------------- HTTP


class Connection:
    """One keep-alive HTTP/1.1 connection (reopened if the server closed it between requests)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self.conn.connect()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _send(self, path: str, body: dict[str, Any]) -> tuple[float, http.client.HTTPResponse]:
        payload = json.dumps(body).encode()
        for attempt in (1, 2):
            conn = self._open()
            started = time.perf_counter()
            try:
                conn.request("POST", self.prefix + path, body=payload, headers=self.headers)
                return started, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()  # an idle keep-alive connection the server had closed: once more, fresh
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body: dict[str, Any]) -> tuple[float, int, dict[str, str], bytes]:
        """(milliseconds to the whole answer, status, headers, body)."""
        started, response = self._send(path, body)
        data = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        return elapsed, response.status, dict(response.getheaders()), data

    def stream(self, path: str, body: dict[str, Any], first_text: Any) -> tuple[float, float, int, str]:
        """(ms to the first line `first_text(line)` accepts, ms to the end, status, the text after `data:`
        lines joined); the stream is read to its end so the connection can be reused."""
        started, response = self._send(path, body)
        if response.status != 200:
            return 0.0, 0.0, response.status, response.read().decode(errors="replace")
        first = None
        lines = []
        while True:
            line = response.readline()
            if not line:
                break
            text = line.decode().rstrip("\r\n")
            if first is None and text and first_text(text):
                first = (time.perf_counter() - started) * 1000
            if text:
                lines.append(text)
        total = (time.perf_counter() - started) * 1000
        return first if first is not None else total, total, 200, "\n".join(lines)


def _openai_text(line: str) -> bool:
    if not line.startswith("data: {"):
        return False
    chunk = json.loads(line[6:])
    choices = chunk.get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def _lunaos_text(line: str) -> bool:
    return line == "event: token"


# ----------------------------------------------------------------------------- set-up


class CannedUpstream:
    """bench/canned_upstream.py in a process of its own (it must not share the benchmark's CPU time)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.canned_upstream", "--port", str(self.port)],
                                     cwd=ROOT, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise SetupError("the canned upstream did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_upstream(args: argparse.Namespace, log_dir: Path) -> tuple[str, str, Any]:
    """(base URL, model, server or None): the given upstream, or one started here (llama.cpp or canned)."""
    if args.upstream_url:
        return args.upstream_url.rstrip("/"), args.model, None
    if args.upstream == "canned":
        canned = CannedUpstream()
        return canned.url, "canned", canned
    from tests.support.llm_server import LlamaServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise SetupError(f"cannot start the upstream: {reason}; or pass --upstream-url")
    server = LlamaServer("bench-upstream", log_dir, threads=args.upstream_threads)
    try:
        server.start(timeout=180)
    except Exception as error:
        raise SetupError(f"the llama server did not start: {error}") from None
    return server.url, server.model, server


def credentials(server: Server, resources: GatewayResources) -> str:
    """A user created with the CLI and an API key with ai:use (its own limit unlimited)."""
    email = f"bench-{resources.token}@example.com"
    proc = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "users", "create", email,
                           "--password-stdin"], input=PASSWORD + "\n", text=True, capture_output=True,
                          cwd=ROOT, env=server.env, timeout=120)
    if proc.returncode != 0:
        raise SetupError(f"`flask users create` failed: {proc.stderr[-1000:]}")
    session = _post(server.base + "/v1/auth/login", {"email": email, "password": PASSWORD})
    key = _post(server.base + "/v1/api-keys", {"name": "bench-gateway", "scopes": ["ai:use"],
                                               "rate_limit": UNLIMITED}, session["access_token"])
    return key["key"]


# ----------------------------------------------------------------------------- measuring


@dataclass
class Samples:
    latency: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    ttft: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    same_answer: int = 0  # rounds where the gateway's text equals the upstream's (temperature 0)
    rounds: int = 0
    # CPU the gateway's processes (gunicorn master and workers) used per gateway request: unlike
    # latency, hardly moved by other load on the machine.
    cpu_ms: dict[str, float] = field(default_factory=dict)


class CpuClock:
    """CPU seconds used so far by a fixed set of processes."""

    def __init__(self, pids: tuple[int, ...]):
        self.pids = pids

    def now(self) -> float:
        return sum(_proc_ticks(pid) for pid in self.pids) / _CLK_TCK


def _bodies(model: str, max_tokens: int, stream: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    openai = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    lunaos = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    if stream:
        openai = {**openai, "stream": True}
        lunaos = {**lunaos, "stream": True}
    return {DIRECT: ("/chat/completions", openai), OPENAI: ("/v1/chat/completions", openai),
            LUNAOS: ("/v1/ai/chat", lunaos)}


def _answer(path: str, body: bytes) -> str:
    data = json.loads(body)
    return data["data"]["response"] if path == LUNAOS else data["choices"][0]["message"]["content"]


def measure(args: argparse.Namespace, upstream_url: str, model: str, gateway_url: str, key: str,
            clock: CpuClock, progress: Any) -> Samples:
    conns = {DIRECT: Connection(upstream_url), OPENAI: Connection(gateway_url, {"Authorization": f"Bearer {key}"}),
             LUNAOS: Connection(gateway_url, {"Authorization": f"Bearer {key}"})}
    samples = Samples()
    order = list(PATHS)
    rng = random.Random(args.seed)
    plain = _bodies(model, args.max_tokens, stream=False)
    streamed = _bodies(model, args.max_tokens, stream=True)
    try:
        # Non-streamed: warm-up rounds first (connections, the upstream's prompt cache, lazy imports).
        for index in range(args.warmup + args.requests):
            if index == args.warmup:
                cpu_start = clock.now()
            rng.shuffle(order)
            answers = {}
            for name in order:
                path, body = plain[name]
                elapsed, status, headers, data = conns[name].post(path, body)
                if status != 200:
                    raise SetupError(f"{name} answered {status}: {data[:300]!r}")
                if name != DIRECT and "X-LLM-Provider" not in headers:
                    raise SetupError(f"{name} sent no X-LLM-Provider header: not served by the gateway's router")
                answers[name] = _answer(name, data)
                if index >= args.warmup:
                    samples.latency[name].append(elapsed)
            if index >= args.warmup:
                samples.rounds += 1
                samples.same_answer += answers[OPENAI] == answers[DIRECT] == answers[LUNAOS]
            if (index + 1) % 50 == 0:
                progress(f"non-streamed: {index + 1}/{args.warmup + args.requests} rounds")
        samples.cpu_ms["chat"] = (clock.now() - cpu_start) * 1000 / (2 * args.requests)
        for index in range(args.warmup + args.streams):
            if index == args.warmup:
                cpu_start = clock.now()
            rng.shuffle(order)
            for name in order:
                path, body = streamed[name]
                first, _, status, text = conns[name].stream(path, body, _lunaos_text if name == LUNAOS
                                                            else _openai_text)
                if status != 200:
                    raise SetupError(f"{name} (stream) answered {status}: {text[:300]!r}")
                if index >= args.warmup:
                    samples.ttft[name].append(first)
            if (index + 1) % 50 == 0:
                progress(f"streamed: {index + 1}/{args.warmup + args.streams} rounds")
        samples.cpu_ms["stream"] = (clock.now() - cpu_start) * 1000 / (2 * args.streams)
    finally:
        for conn in conns.values():
            conn.close()
    return samples


# ----------------------------------------------------------------------------- reporting


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def paired_median(gateway: list[float], direct: list[float]) -> float:
    return statistics.median(g - d for g, d in zip(gateway, direct, strict=True))


def summarize(samples: Samples) -> dict[str, Any]:
    out: dict[str, Any] = {"latency": {}, "ttft": {}, "overhead": {}, "rounds": samples.rounds,
                           "same_answer": samples.same_answer, "cpu_ms": samples.cpu_ms}
    for kind in ("latency", "ttft"):
        for name, values in getattr(samples, kind).items():
            out[kind][name] = {"n": len(values), "p50": pct(values, 50), "p90": pct(values, 90),
                               "p99": pct(values, 99), "mean": statistics.fmean(values)}
    for name in (OPENAI, LUNAOS):
        lat, direct = out["latency"][name], out["latency"][DIRECT]
        ttft, direct_ttft = out["ttft"][name], out["ttft"][DIRECT]
        out["overhead"][name] = {
            "p50": lat["p50"] - direct["p50"], "p99": lat["p99"] - direct["p99"],
            "paired_p50": paired_median(samples.latency[name], samples.latency[DIRECT]),
            "ttft_p50": ttft["p50"] - direct_ttft["p50"], "ttft_p99": ttft["p99"] - direct_ttft["p99"],
            "ttft_paired_p50": paired_median(samples.ttft[name], samples.ttft[DIRECT]),
        }
    return out


def goals(summary: dict[str, Any]) -> list[tuple[str, bool]]:
    checks = []
    for name in (OPENAI, LUNAOS):
        over = summary["overhead"][name]
        route = name.removeprefix("gateway ")
        checks.append((f"{route}: p50 overhead {over['p50']:+.2f} ms (goal <= {GOAL_P50_MS:g} ms)",
                       over["p50"] <= GOAL_P50_MS))
        checks.append((f"{route}: p99 overhead {over['p99']:+.2f} ms (goal <= {GOAL_P99_MS:g} ms)",
                       over["p99"] <= GOAL_P99_MS))
        checks.append((f"{route}: TTFT overhead {over['ttft_p50']:+.2f} ms at p50 (goal <= {GOAL_TTFT_MS:g} ms)",
                       over["ttft_p50"] <= GOAL_TTFT_MS))
    return checks


def render(summary: dict[str, Any], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    lines = [
        f"AI gateway overhead: gunicorn {args.worker_class} x{args.workers}, Redis limits, SQLite; upstream "
        f"{meta['upstream']}",
        f"{summary['rounds']} non-streamed and {args.streams} streamed rounds, one request at a time on keep-alive "
        f"connections, paths interleaved in shuffled order; max_tokens {args.max_tokens}, temperature 0",
        "",
        f"{'':<14} {'path':<30} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}",
    ]
    for kind, label in (("latency", "chat"), ("ttft", "first token")):
        for name in PATHS:
            row = summary[kind][name]
            lines.append(f"{label:<14} {name:<30} {row['p50']:>8.2f} {row['p90']:>8.2f} {row['p99']:>8.2f} "
                         f"{row['mean']:>8.2f}")
    lines += ["", f"{'overhead (gateway - direct)':<30} {'p50 ms':>8} {'p99 ms':>8} {'paired p50':>11} "
                  f"{'TTFT p50':>9} {'TTFT p99':>9} {'TTFT paired':>12}"]
    for name in (OPENAI, LUNAOS):
        over = summary["overhead"][name]
        lines.append(f"{name.removeprefix('gateway '):<30} {over['p50']:>+8.2f} {over['p99']:>+8.2f} "
                     f"{over['paired_p50']:>+11.2f} {over['ttft_p50']:>+9.2f} {over['ttft_p99']:>+9.2f} "
                     f"{over['ttft_paired_p50']:>+12.2f}")
    cpu = summary["cpu_ms"]
    lines += ["", f"gateway CPU (gunicorn master + workers) per request: {cpu['chat']:.1f} ms per chat, "
                  f"{cpu['stream']:.1f} ms per streamed chat ({args.max_tokens} tokens)",
              f"identical answers through the gateway and direct: {summary['same_answer']}/{summary['rounds']}",
              "", "Goals:"]
    for text, ok in goals(summary):
        lines.append(f"  {'PASS' if ok else 'FAIL'}  {text}")
    load = meta.get("loadavg_before")
    if load:
        lines.append(f"\nload average before the run: {load} ({os.cpu_count()} CPUs)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured non-streamed rounds (one chat per path)")
    parser.add_argument("--streams", type=int, default=200, help="measured streamed rounds (one stream per path)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured rounds before each phase")
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens of every chat")
    parser.add_argument("--seed", type=int, default=1, help="seed of the per-round shuffling")
    parser.add_argument("--worker-class", default="gevent", choices=("gevent", "sync", "gthread"))
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--upstream", choices=("llama", "canned"), default="llama",
                        help="the upstream started here: llama-cpp-python's server over SmolLM2, or "
                             "bench/canned_upstream.py (a fixed answer at once: no model time to blur the overhead)")
    parser.add_argument("--upstream-url", help="an OpenAI-compatible base URL (…/v1) to use instead of starting "
                                               "an upstream")
    parser.add_argument("--model", default="smollm2", help="the model to ask for (with --upstream-url)")
    parser.add_argument("--upstream-threads", type=int, default=1, help="threads of the started llama server")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--json", metavar="PATH", help="also write the samples and the summary as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every goal is met")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.requests < 2 or args.streams < 2 or args.warmup < 0 or args.max_tokens < 1:
        parser.error("--requests and --streams must be >= 2, --warmup >= 0, --max-tokens >= 1")
    # What AuthResources/Resources read: SQLite, the shared limiter settings.
    args.database, args.pg_admin_dsn = "sqlite", ""
    args.anonymous_limit, args.lease = UNLIMITED, 0.01
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(f"[bench] {msg}", file=sys.stderr,
                                                                          flush=True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    meta: dict[str, Any] = {"loadavg_before": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    resources = GatewayResources(args)
    upstream = None
    server: Server | None = None
    try:
        resources.open()
        progress("starting the upstream model server")
        upstream_url, model, upstream = start_upstream(args, Path(tempfile.mkdtemp(prefix="bench-llm-",
                                                                                   dir=resources.tmp)))
        if isinstance(upstream, CannedUpstream):
            meta["upstream"] = f"{upstream_url} (canned answers, bench/canned_upstream.py)"
        else:
            meta["upstream"] = (f"{upstream_url} ({model}" + (f", llama-cpp-python server, {args.upstream_threads} "
                                                             "thread(s))" if upstream else ")"))
        resources.providers = [{"name": "upstream", "type": "openai", "base_url": upstream_url, "api_key": "",
                                "models": [model], "priority": 1}]
        resources.migrate()
        progress("starting LunaOS under gunicorn")
        server = Server("wsgi:app", args.worker_class, args.workers, resources)
        server.start()
        key = credentials(server, resources)
        samples = measure(args, upstream_url, model, server.base, key, CpuClock(server.pids()), progress)
    except SetupError as error:
        print(f"bench.gateway: set-up failed: {error}", file=sys.stderr)
        if server is not None:
            print(server.log_tail(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.gateway: interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
        if upstream is not None:
            upstream.stop()
        resources.close()
    summary = summarize(samples)
    print(render(summary, args, meta))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "meta": meta,
                   "summary": summary, "goals": [{"goal": t, "met": ok} for t, ok in goals(summary)],
                   "samples": {"latency": samples.latency, "ttft": samples.ttft}}
        path.write_text(json.dumps(payload, indent=2))
    if args.check and not all(ok for _, ok in goals(summary)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
