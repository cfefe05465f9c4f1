"""Real servers for tests: gunicorn and `flask worker` as subprocesses.

Each process runs in its own session (process group), logs to a file the test
can show on failure, and is stopped when its context manager exits, even when
the test failed. An `atexit` hook kills anything left over if pytest itself is
interrupted.

    with gunicorn(env, tmp_path, workers=2) as server:
        requests.get(server.url + "/health")
    with flask_worker(env, tmp_path, burst=True) as worker:
        worker.wait(60)
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
TEST_APP = "tests.support.testapp:create_test_app"
_running: list[Process] = []


class ProcessFailed(AssertionError):
    pass


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def logs(self, tail: int = 12000) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-tail:]

    def wait(self, timeout: float) -> int:
        """Wait for a process expected to exit by itself (a burst worker); its exit code."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ProcessFailed(f"{self.name} did not exit within {timeout}s; log:\n{self.logs()}") from None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL, no clean-up: what an OOM killer or a lost host does."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        if self.alive():
            self.signal_group(sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Children (gunicorn workers, job threads' subprocesses) share the group.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._log.close()
        if self in _running:
            _running.remove(self)


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_running):
        process.signal_group(signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(config: dict[str, Any], *, token: str | None = None, user_id: str = "usr_test",
                   overrides: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a server or worker: `config`, test hooks, PYTHONPATH.

    Core settings go in as LUNAOS_* variables, the way production sets them; the rest
    (plugin settings, `overrides`) through TEST_CONFIG (see testapp.py), because an
    environment name that the core does not declare is refused at start-up.
    """
    from app.config import Defaults

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNAOS_", "GUNICORN_", "TEST_CONFIG"))}
    if os.environ.get("LUNAOS_INSTANCE_PATH"):
        env["LUNAOS_INSTANCE_PATH"] = os.environ["LUNAOS_INSTANCE_PATH"]
    extra_config = dict(overrides or {})
    for key, value in config.items():
        if key == "TESTING" or value is None:
            continue
        if hasattr(Defaults, key):
            env[f"LUNAOS_{key}"] = value if isinstance(value, str) else json.dumps(value)
        else:
            extra_config.setdefault(key, value)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["FLASK_APP"] = TEST_APP
    env["PYTHONUNBUFFERED"] = "1"
    if token:
        env["TEST_BEARER_TOKEN"] = token
        env["TEST_USER_ID"] = user_id
    if extra_config:
        env["TEST_CONFIG"] = json.dumps(extra_config)
    env.update(extra)
    return env


class Gunicorn(Process):
    def __init__(self, env: dict[str, str], log_dir: Path, *, app: str, workers: int, worker_class: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}", "GUNICORN_WORKERS": str(workers),
               "GUNICORN_WORKER_CLASS": worker_class, "GUNICORN_GRACEFUL_TIMEOUT": "2"}
        args = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), app]
        super().__init__(f"gunicorn:{self.port}", args, env, log_dir / f"gunicorn-{self.port}.log")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessFailed(f"gunicorn exited with {self.popen.returncode}; log:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status in (200, 503):
                        return
            except urllib.error.HTTPError as error:  # 503 still means it answers
                if error.code == 503:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise ProcessFailed(f"gunicorn did not answer /health within {timeout}s; log:\n{self.logs()}")


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log_dir: Path, *, app: str = TEST_APP + "()", workers: int = 2,
             worker_class: str = "gevent", ready_timeout: float = 30.0) -> Iterator[Gunicorn]:
    """A real gunicorn with gunicorn.conf.py; yields once /health answers; always stopped."""
    server = Gunicorn(env, log_dir, app=app, workers=workers, worker_class=worker_class)
    try:
        server.wait_ready(ready_timeout)
        yield server
    finally:
        server.stop(signal.SIGQUIT)  # quick shutdown: open SSE streams need not wait out the grace time


@contextlib.contextmanager
def flask_worker(env: dict[str, str], log_dir: Path, *, burst: bool = True, queues: tuple[str, ...] = (),
                 name: str | None = None) -> Iterator[Process]:
    """A real `flask worker` (RQ) built from the test app factory; always stopped."""
    args = [sys.executable, "-m", "flask", "worker"]
    if burst:
        args.append("--burst")
    for queue in queues:
        args += ["--queue", queue]
    if name:
        args += ["--name", name]
    label = name or f"worker-{time.monotonic_ns()}"
    worker = Process(f"flask worker {label}", args, env, log_dir / f"{label}.log")
    try:
        yield worker
    finally:
        worker.stop()


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.02, message: str = "condition") -> Any:
    """Poll `predicate()` until it returns something truthy (and return that), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class SSEReader:
    """Parses a server-sent event stream from any iterator of byte (or str) chunks.

    `next_frame()` returns dicts: {"comment": str} for comment lines, {"retry": int} for
    reconnection hints, or {"event", "data", "id"} for events (`data` JSON-decoded when it is JSON).
    """

    def __init__(self, chunks: Iterator[Any]):
        self._chunks = iter(chunks)
        self._buffer = ""

    def next_frame(self) -> dict[str, Any] | None:
        while "\n\n" not in self._buffer:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return None
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        raw, self._buffer = self._buffer.split("\n\n", 1)
        return self._parse(raw)

    @staticmethod
    def _parse(raw: str) -> dict[str, Any]:
        frame: dict[str, Any] = {}
        data: list[str] = []
        for line in raw.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "retry":
                frame["retry"] = int(value)
            elif name in ("event", "id"):
                frame[name] = value
        if data:
            text = "\n".join(data)
            try:
                frame["data"] = json.loads(text)
            except ValueError:
                frame["data"] = text
            frame.setdefault("event", "message")
            frame.setdefault("id", None)
        return frame

    def next_event(self, skip_comments: bool = True) -> dict[str, Any] | None:
        """The next real event (heartbeats and retry hints skipped); None when the stream ended."""
        while True:
            frame = self.next_frame()
            if frame is None or "data" in frame or not skip_comments:
                return frame

    def events_until(self, predicate: Any) -> list[dict[str, Any]]:
        """Events up to and including the first one for which `predicate(event)` is true."""
        seen = []
        while True:
            event = self.next_event()
            if event is None:
                raise AssertionError(f"stream ended before the expected event; got {seen}")
            seen.append(event)
            if predicate(event):
                return seen


def forget_rq_state(redis: Any, app: Any) -> None:
    """Remove what RQ keeps about this test's jobs and queue.

    The harness deletes keys naming the test slot; RQ's per-job keys are named after job
    ids instead (and the global queue set lists every queue ever used), so they go here.
    """
    from app.extensions import db
    from app.tasks import Job

    with app.app_context():
        job_ids = list(db.session.scalars(db.select(Job.id)))
    for job_id in job_ids:
        keys = list(redis.scan_iter(match=f"rq:*{job_id}*", count=1000))
        if keys:
            redis.delete(*keys)
    redis.srem("rq:queues", f"rq:queue:{app.config['JOBS_QUEUE']}")
