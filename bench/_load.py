"""Load generation for the benchmarks: wrk at saturation, and wrk paced to a fixed rate.

wrk is closed-loop: each connection sends its next request only when the last
one has been answered, so it finds a server's saturation throughput but cannot
say how a server behaves at a given request rate. wrk2 (the fixed-rate fork) is
not in Debian, so `fixed_rate` paces wrk with a small Lua `delay()` instead:

- Each wrk thread keeps an absolute schedule of send times (evenly spaced, or
  Poisson with exponential gaps) and `delay()` returns the time to the next
  slot, so the offered rate does not drift with the server's latency.
- wrk's timers have millisecond resolution: a request leaves within about
  +-0.5 ms of its slot, which bunches sub-millisecond gaps together (slightly
  burstier than the intended arrivals, so it errs against the server).
- wrk times a request from when it was actually sent. A request whose slot came
  while every connection was still busy goes out late, and its wait is not in
  the histogram (coordinated omission; wrk2 would count it). The script counts
  such late sends, and `co_bound_p99_ms` gives an upper bound that does count
  them: adding a delay to `late` requests can push at most that many samples
  above a threshold, so the true p99 is at most the measured
  p(99 + 100 * late / requests). With enough connections `late` is 0 and the
  bound equals the measured p99.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULT_MARK = "BENCH_RESULT "

# Shared by both scripts: one JSON line from done(), with the percentiles the harness needs.
_DONE = r"""
local threads = {}
local seed = 0

function setup(thread)
  seed = seed + 1
  thread:set("seed", seed)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local late, late_max, sent = 0, 0, 0
  for _, t in ipairs(threads) do
    late = late + (t:get("late") or 0)
    sent = sent + (t:get("sent") or 0)
    local m = t:get("late_max") or 0
    if m > late_max then late_max = m end
  end
  local n = summary.requests
  -- the percentile up to which coordinated omission cannot reach (see bench/_load.py)
  local co_q = 99 + 100 * late / math.max(n, 1)
  local co_p99 = -1
  if co_q < 100 then co_p99 = latency:percentile(co_q) end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,' ..
    '"err_timeout":%d,"late":%d,"late_max_ms":%.3f,"sent":%d,"co_p99_us":%d}\n',
    "RESULT_MARK", n, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout, late, late_max, sent, co_p99))
end
""".replace("RESULT_MARK", RESULT_MARK)

_PACED = r"""
-- Open-loop pacing: an absolute schedule of send slots per thread (see bench/_load.py).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms, poisson, next_at
late, late_max, sent = 0, 0, 0

function init(args)
  interval_ms = 1000 / tonumber(args[1])
  poisson = args[2] == "poisson"
  math.randomseed(tonumber(seed or 1) * 7919 + os.time())
end

function delay()
  local t = now_ms()
  if next_at == nil then next_at = t end
  local slot = next_at
  if poisson then
    next_at = next_at - math.log(1 - math.random()) * interval_ms
  else
    next_at = next_at + interval_ms
  end
  sent = sent + 1
  local wait = slot - t
  if wait < -1 then  -- more than the timer's resolution behind: no free connection at this slot
    late = late + 1
    if -wait > late_max then late_max = -wait end
  end
  if wait <= 0.5 then return 0 end
  return math.floor(wait + 0.5)
end
"""


@dataclass
class WrkResult:
    url: str
    connections: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    target_rps: float | None = None
    late: int = 0
    late_max_ms: float = 0.0
    co_p99_ms: float | None = None  # fixed-rate runs: p99 bound that counts late sends
    foreign_cpu: float | None = None  # CPU (in cores) used by processes outside the benchmark
    server_cpu_us: float | None = None  # server CPU time per request (master + workers)
    redis_cpu_us: float | None = None  # Redis CPU time per request
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class LoadError(RuntimeError):
    pass


def wrk_path() -> str:
    path = shutil.which("wrk")
    if not path:
        raise LoadError("wrk not found: install it with `apt-get install wrk` (Debian package)")
    return path


class Wrk:
    """Runs wrk with the harness's Lua scripts (written once to a private temp dir)."""

    def __init__(self, headers: dict[str, str] | None = None, timeout_s: float = 5.0):
        self.binary = wrk_path()
        self.headers = headers or {}
        self.timeout_s = timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
        self._saturate = self._dir / "saturate.lua"
        self._saturate.write_text(_DONE)
        self._paced = self._dir / "paced.lua"
        self._paced.write_text(_PACED + _DONE)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def saturate(self, url: str, *, duration_s: float, connections: int, threads: int,
                 watch_pids: tuple[int, ...] = (), other_pids: tuple[int, ...] = ()) -> WrkResult:
        """Closed loop: as many requests as `connections` connections can get answered."""
        return self._run(url, self._saturate, [], duration_s, connections, threads, None, watch_pids, other_pids)

    def fixed_rate(self, url: str, *, rate: float, duration_s: float, connections: int, threads: int,
                   arrivals: str = "poisson", watch_pids: tuple[int, ...] = (),
                   other_pids: tuple[int, ...] = ()) -> WrkResult:
        """Open loop at `rate` requests/s in total, split evenly over the threads."""
        args = [f"{rate / threads:.3f}", arrivals]
        return self._run(url, self._paced, args, duration_s, connections, threads, rate, watch_pids, other_pids)

    def _run(self, url: str, script: Path, script_args: list[str], duration_s: float, connections: int,
             threads: int, target: float | None, watch_pids: tuple[int, ...],
             other_pids: tuple[int, ...]) -> WrkResult:
        cmd = [self.binary, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s",
               f"--timeout={self.timeout_s:g}s", "-s", str(script)]
        for name, value in self.headers.items():
            cmd += ["-H", f"{name}: {value}"]
        cmd.append(url)
        if script_args:
            cmd += ["--", *script_args]
        meter = CpuMeter(watch_pids, other_pids)
        before = os.times()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=duration_s + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise LoadError(f"wrk did not finish: {' '.join(cmd)}") from None
        after = os.times()
        # wrk has been reaped, so its CPU shows up in our children's times.
        wrk_seconds = (after.children_user + after.children_system) - (before.children_user + before.children_system)
        server_cpu, redis_cpu, foreign = meter.finish(wrk_seconds)
        line = next((ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)), None)
        if proc.returncode != 0 or line is None:
            raise LoadError(f"wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
        data = json.loads(line[len(RESULT_MARK):])
        seconds = data["duration_us"] / 1e6
        co = data["co_p99_us"]
        return WrkResult(
            url=url, connections=connections, threads=threads, duration_s=round(seconds, 2),
            requests=data["requests"], rps=data["requests"] / seconds if seconds else 0.0,
            p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
            p999_ms=data["p999_us"] / 1000, max_ms=data["max_us"] / 1000, mean_ms=data["mean_us"] / 1000,
            errors={k[4:]: v for k, v in data.items() if k.startswith("err_") and v},
            target_rps=target, late=data["late"], late_max_ms=data["late_max_ms"],
            co_p99_ms=(co / 1000 if co >= 0 else float("inf")) if target else None,
            foreign_cpu=foreign,
            server_cpu_us=server_cpu / data["requests"] * 1e6 if data["requests"] else None,
            redis_cpu_us=redis_cpu / data["requests"] * 1e6 if data["requests"] and other_pids else None,
        )


# --- CPU accounting: how much of the 2 cores did something other than the benchmark use? ---

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    # user + nice + system: what processes can be charged with (interrupt time, which the
    # loopback traffic of the benchmark itself causes, is left out on both sides)
    return fields[0] + fields[1] + fields[2]


def _proc_ticks(pid: int) -> int:
    """utime + stime of a process and its threads (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return found


class CpuMeter:
    """CPU used over one run by the server, by Redis, and by everything else on the machine.

    The server's CPU per request is the cost of the stack, free of the scheduling
    noise that latency suffers from; "foreign" CPU means another workload shared
    the machine during the run (its numbers are noisier, and the harness says so).
    """

    def __init__(self, server_pids: tuple[int, ...], other_pids: tuple[int, ...] = ()):
        self.server_pids, self.other_pids = tuple(server_pids), tuple(other_pids)
        self.started = time.monotonic()
        self.busy = _busy_ticks()
        self.ticks = {pid: _proc_ticks(pid) for pid in (*self.server_pids, *self.other_pids)}

    def _used(self, pids: tuple[int, ...]) -> float:
        return sum(_proc_ticks(pid) - self.ticks.get(pid, 0) for pid in pids) / _CLK_TCK

    def finish(self, load_generator_seconds: float) -> tuple[float, float, float]:
        """(server CPU seconds, other watched CPU seconds, foreign CPU in cores)."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        server, other = self._used(self.server_pids), self._used(self.other_pids)
        busy = (_busy_ticks() - self.busy) / _CLK_TCK
        foreign = max(busy - server - other - load_generator_seconds, 0.0) / elapsed
        return server, other, foreign


def wrk_version() -> str:
    proc = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True)
    match = re.search(r"wrk\s+(\S+)", proc.stdout + proc.stderr)
    return match.group(1) if match else "unknown"
