"""Executor costs: risk classification over the test corpus, and the per-step overhead of running a
command through the executor against a bare `subprocess.run` of the same command, in the same run.

    python -m bench.executor [--repeat 30] [--steps 20]

Goal (issue 6): under 10 ms of overhead per step. Rows:
- classification: every corpus command parsed and rated (cache cleared each pass);
- sandbox: `sandbox.run` of one command (own process group, rlimits, pids cgroup when available,
  capped pipes, allow-listed env), without and with bubblewrap;
- full step: a run of N steps through the HTTP API and the in-process job (SQLite; `step` and
  `output` events stored and published), per step, from the run's own start/finish times.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMANDS = ["true", "echo hello", "ls -la /", "seq 1 2000"]
PASSWORD = "Moon-Landing-1969"


def classification(repeat: int) -> list[tuple[str, str, str]]:
    from plugins.executor.corpus import HOSTILE, ORDINARY
    from plugins.executor.risk import assess

    commands = [c for _, c in HOSTILE] + ORDINARY
    per_command: list[float] = []
    started = time.perf_counter()
    for _ in range(repeat):
        assess.cache_clear()
        for command in commands:
            t = time.perf_counter()
            assess(command)
            per_command.append((time.perf_counter() - t) * 1e6)
    elapsed = time.perf_counter() - started
    blocked = sum(assess(c).blocked for c in (c for _, c in HOSTILE))
    false_positives = sum(assess(c).blocked or assess(c).risk == "dangerous" for c in ORDINARY)
    per_command.sort()
    return [
        ("classification", "commands/s (corpus, uncached)", f"{len(per_command) / elapsed:,.0f}"),
        ("classification", "p50 / p99 per command", f"{_pct(per_command, 50):,.0f} / {_pct(per_command, 99):,.0f} µs"),
        ("classification", "hostile blocked", f"{blocked}/{len(HOSTILE)}"),
        ("classification", "ordinary false positives (blocked or dangerous)", f"{false_positives}/{len(ORDINARY)}"),
    ]


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q / 100))]


def _box(tmp: Path, mode: str):
    from plugins.executor import cgroups, sandbox

    home = tmp / "ws" / "usr_bench"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return sandbox.Sandbox(workspace=home, workspaces_root=tmp / "ws", mode=mode, shell="/bin/sh", env=env,
                           hide=(str(tmp / "instance"),), limits=sandbox.Limits(timeout=30),
                           cgroup_parent=cgroups.base_directory("auto"))


def sandbox_overhead(repeat: int) -> list[tuple[str, str, str]]:
    from plugins.executor import sandbox

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "instance").mkdir()
        modes = ["process"] + (["bwrap"] if sandbox.bwrap_path() and sandbox.bwrap_works(sandbox.bwrap_path())
                               else [])
        boxes = {mode: _box(Path(tmp), mode) for mode in modes}
        for mode, box in boxes.items():  # one mode at a time: a namespace's teardown must not slow the other
            for command in COMMANDS:
                bare_ms: list[float] = []
                mode_ms: list[float] = []
                for _ in range(repeat):  # interleaved with bare runs, so drift on a shared machine hits both
                    t = time.perf_counter()
                    subprocess.run(["/bin/sh", "-c", command], capture_output=True, cwd=box.workspace)
                    bare_ms.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    sandbox.run(command, box.workspace, box)
                    mode_ms.append((time.perf_counter() - t) * 1000)
                bare, median = statistics.median(bare_ms), statistics.median(mode_ms)
                rows.append((f"sandbox ({mode})", f"`{command}`: bare {bare:.2f} ms -> {median:.2f} ms",
                             f"+{median - bare:.2f} ms"))
    return rows


def full_steps(repeat: int, steps: int, mode: str) -> tuple[str, str, str]:
    """A run of `steps` x `true` through the API and the in-process job, per step, against bare `true`."""
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LUNAOS_INSTANCE_PATH"] = tmp
        app = create_app({"DATABASE_URL": f"sqlite:///{tmp}/bench.db", "SECRET_KEY": "b" * 40,
                          "JWT_SECRET_KEY": "j" * 40, "KEYS_PEPPER": "p" * 40, "LOG_LEVEL": "WARNING",
                          "EXECUTOR_ENABLED": True,
                          "EXECUTOR_SANDBOX": mode, "LLM_OFFLINE": False, "LLM_PROVIDERS": [],
                          "AUTH_ARGON2_TIME_COST": 1, "AUTH_ARGON2_MEMORY_KIB": 1024, "AUTH_ARGON2_PARALLELISM": 1,
                          "RATELIMIT_TIERS": {"free": "1000000/minute"}})
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"), revision="heads")
            from plugins.auth import service

            service.create_user("bench@example.com", PASSWORD, role="admin")
        client = app.test_client()
        token = client.post("/v1/auth/login", json={"email": "bench@example.com", "password": PASSWORD}
                            ).get_json()["data"]["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        task = client.post("/v1/executor/plan", json={"command": "run: true"}, headers=headers).get_json()["data"]
        body = {"task_id": task["task_id"], "steps": [{"id": i, "command": "true"} for i in range(1, steps + 1)]}
        per_step, bare = [], []
        from plugins.executor.models import ExecutorRun

        for _ in range(max(repeat // 5, 3)):
            answer = client.post("/v1/executor/run", json=body, headers=headers).get_json()["data"]
            assert answer["overall_status"] == "completed", answer
            with app.app_context():
                run = db.session.get(ExecutorRun, answer["run_id"])
                per_step.append((run.finished_at - run.started_at).total_seconds() * 1000 / steps)
            for _ in range(steps):
                t = time.perf_counter()
                subprocess.run(["/bin/sh", "-c", "true"], capture_output=True)
                bare.append((time.perf_counter() - t) * 1000)
        with app.app_context():
            db.engine.dispose()
    step, base = statistics.median(per_step), statistics.median(bare)
    return (f"full step ({mode})", f"{steps} x `true` via API + job: {step:.2f} ms/step vs bare {base:.2f} ms",
            f"+{step - base:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    import logging

    logging.disable(logging.INFO)
    rows = classification(max(args.repeat // 10, 3))
    rows += sandbox_overhead(args.repeat)
    from plugins.executor import sandbox

    modes = ["process"] + (["bwrap"] if sandbox.bwrap_path() and sandbox.bwrap_works(sandbox.bwrap_path()) else [])
    for mode in modes:
        rows.append(full_steps(args.repeat, args.steps, mode))
    widths = [max(len(r[i]) for r in rows + [("what", "measure", "result")]) for i in range(3)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(("what", "measure", "result"), widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
