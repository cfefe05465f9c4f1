"""The plugin's settings and its per-process objects (index store, embedder), read from the app config."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from app.config import ConfigError

from . import embedders
from .chunking import Budget
from .index_store import IndexStore
from .ssrf import Limits
from .vector_index import IndexSettings

DEFAULTS: dict[str, Any] = {
    "RAG_EMBEDDER": "minilm",  # or "openai", or a `lunaos.embedders` entry point
    "RAG_EMBED_BATCH_SIZE": 32,
    "RAG_EMBED_WINDOW": 512,  # new chunks gathered across documents before they are embedded together
    # torch threads per process. 1 suits web workers (one per core; a query is one short text, and more threads
    # than cores cost 5x in latency); a process that only indexes (RQ worker, CLI) may use 0: one per core.
    "RAG_EMBED_THREADS": 1,
    "RAG_CHUNK_TOKENS": 200,  # chunk size in the embedder's tokens (MiniLM reads at most 256)
    "RAG_CHUNK_OVERLAP": 20,
    "RAG_MIN_CHUNK_TOKENS": 40,  # code: smaller neighbours are merged
    "RAG_SEMANTIC_PERCENTILE": 90.0,  # semantic: cut where sentence distance exceeds this percentile
    "RAG_INDEX_DIR": "",  # default: <instance>/rag
    "RAG_ANN_THRESHOLD": 100_000,  # vectors from which a collection uses an approximate index
    "RAG_ANN_INDEX": "hnsw",  # hnsw | ivf
    "RAG_HNSW_M": 32,
    "RAG_HNSW_EF_CONSTRUCTION": 64,
    "RAG_HNSW_EF_SEARCH": 96,
    "RAG_IVF_NPROBE": 32,
    "RAG_TOMBSTONE_RATIO": 0.2,
    "RAG_CACHE_COLLECTIONS": 32,  # indexes kept in memory per process
    "RAG_SEARCH_CANDIDATES": 50,  # per retriever, before fusion
    # weighted: dense_weight * z-score of the cosine + the rest * z-score of BM25 (better than rrf, reciprocal rank
    # fusion, in bench/rag.py: it keeps how far apart the hits score, which ranks alone forget)
    "RAG_HYBRID_FUSION": "weighted",
    "RAG_HYBRID_DENSE_WEIGHT": 0.6,  # weighted fusion: share of the dense score
    "RAG_RRF_K": 60,
    "RAG_MAX_FILE_BYTES": 5 * 1024 * 1024,
    "RAG_MAX_FILES": 5000,  # per request, repository or CLI run
    "RAG_URL_TIMEOUT": 10.0,
    "RAG_URL_MAX_BYTES": 5 * 1024 * 1024,
    "RAG_URL_MAX_REDIRECTS": 5,
    "RAG_URL_ALLOWED_HOSTS": [],  # hosts (or host:port) trusted although they resolve to private addresses
    "RAG_GITHUB_API_URL": "https://api.github.com",
    "RAG_GITHUB_TOKEN": "",
    "RAG_GITHUB_MAX_BYTES": 100 * 1024 * 1024,
    "RAG_JOB_TIMEOUT": 3600,
    "RAG_OPENAI_EMBED_MODEL": "text-embedding-3-small",
    "RAG_OPENAI_EMBED_DIMENSION": 1536,
    "RAG_OPENAI_EMBED_BASE_URL": "",
    "RAG_OPENAI_EMBED_API_KEY": "",
}
_lock = threading.Lock()


def config(app: Flask | None = None) -> Any:
    return (app or current_app).config


def budget(app: Flask | None = None) -> Budget:
    c = config(app)
    return Budget(max_tokens=int(c["RAG_CHUNK_TOKENS"]), overlap=int(c["RAG_CHUNK_OVERLAP"]),
                  min_tokens=int(c["RAG_MIN_CHUNK_TOKENS"]))


def index_settings(app: Flask | None = None) -> IndexSettings:
    c = config(app)
    return IndexSettings(ann_threshold=int(c["RAG_ANN_THRESHOLD"]), ann_kind=str(c["RAG_ANN_INDEX"]),
                         hnsw_m=int(c["RAG_HNSW_M"]), hnsw_ef_construction=int(c["RAG_HNSW_EF_CONSTRUCTION"]),
                         hnsw_ef_search=int(c["RAG_HNSW_EF_SEARCH"]), ivf_nprobe=int(c["RAG_IVF_NPROBE"]),
                         tombstone_ratio=float(c["RAG_TOMBSTONE_RATIO"]))


def url_limits(app: Flask | None = None) -> Limits:
    c = config(app)
    return Limits(timeout=float(c["RAG_URL_TIMEOUT"]), max_bytes=int(c["RAG_URL_MAX_BYTES"]),
                  max_redirects=int(c["RAG_URL_MAX_REDIRECTS"]))


def allowed_hosts(app: Flask | None = None) -> list[str]:
    value = config(app)["RAG_URL_ALLOWED_HOSTS"]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value or []]


def index_root(app: Flask | None = None) -> Path:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    configured = app.config.get("RAG_INDEX_DIR")
    return Path(configured) if configured else Path(app.instance_path) / "rag"


def store(app: Flask | None = None) -> IndexStore:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get("lunaos.rag.store")
    if found is None:
        with _lock:
            found = app.extensions.get("lunaos.rag.store")
            if found is None:
                found = IndexStore(index_root(app), index_settings(app), int(app.config["RAG_CACHE_COLLECTIONS"]))
                app.extensions["lunaos.rag.store"] = found
    return found


def embedder(app: Flask | None = None, name: str | None = None) -> embedders.Embedder:
    c = config(app)
    return embedders.get(name or str(c["RAG_EMBEDDER"]), c)


def check(app: Flask) -> None:
    """Start-up checks of the settings a type check cannot catch."""
    c = app.config
    problems = []
    if c["RAG_HYBRID_FUSION"] not in ("rrf", "weighted"):
        problems.append("LUNAOS_RAG_HYBRID_FUSION: must be 'rrf' or 'weighted'")
    if not 0.0 <= float(c["RAG_HYBRID_DENSE_WEIGHT"]) <= 1.0:
        problems.append("LUNAOS_RAG_HYBRID_DENSE_WEIGHT: must be from 0 to 1")
    if c["RAG_ANN_INDEX"] not in ("hnsw", "ivf"):
        problems.append("LUNAOS_RAG_ANN_INDEX: must be 'hnsw' or 'ivf'")
    for key in ("RAG_CHUNK_TOKENS", "RAG_MAX_FILE_BYTES", "RAG_URL_MAX_BYTES", "RAG_SEARCH_CANDIDATES",
                "RAG_ANN_THRESHOLD", "RAG_EMBED_BATCH_SIZE", "RAG_MAX_FILES"):
        if int(c[key]) <= 0:
            problems.append(f"LUNAOS_{key}: must be greater than 0")
    try:
        budget(app)
    except ValueError as error:
        problems.append(f"LUNAOS_RAG_CHUNK_TOKENS / RAG_CHUNK_OVERLAP: {error}")
    if c["RAG_EMBEDDER"] not in embedders.available():
        problems.append(f"LUNAOS_RAG_EMBEDDER: unknown embedder {c['RAG_EMBEDDER']!r}; "
                        f"installed: {', '.join(embedders.available())}")
    if problems:
        raise ConfigError("invalid rag configuration:\n  " + "\n  ".join(problems))
