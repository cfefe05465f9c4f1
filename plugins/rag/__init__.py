"""Retrieval: code-aware ingestion, local embeddings, FAISS + BM25 hybrid search, background indexing."""
import os

from flask import Flask

from app.plugins import Plugin

from . import tasks  # noqa: F401  (registers the rag.index and rag.ingest job kinds, in web servers and workers)
from .api import blp
from .cli import rag_cli
from .runtime import DEFAULTS


def init_app(app: Flask) -> None:
    from app import retrieval

    from . import runtime, search

    runtime.check(app)
    retrieval.register_retriever(app, search.retriever)


def health() -> dict:
    from flask import current_app

    from . import embedders

    name = current_app.config["RAG_EMBEDDER"]
    return {"status": "ok", "embedder": name, "loaded": embedders.loaded(name)}


plugin = Plugin(
    name="rag",
    version="1.0.0",
    description="Collections of documents and code, chunked, embedded and searched (dense, lexical, hybrid).",
    blueprint=(blp,),
    requires=("auth", "keys"),
    scopes={"rag:read": "Search your indexed content", "rag:write": "Index and delete your content"},
    models="plugins.rag.models",
    migrations=os.path.join(os.path.dirname(__file__), "migrations"),
    cli=rag_cli,
    config=DEFAULTS,
    secrets=(),
    init_app=init_app,
    health=health,
)
