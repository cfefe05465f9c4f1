"""Search: dense (FAISS), lexical (BM25) or hybrid (reciprocal rank fusion of both), with filters.

The CPU work (embedding the query, loading a new index version, FAISS and BM25
scoring) runs in one call to a real thread, so a gevent worker keeps serving
other requests meanwhile. Only the owner's collections are ever opened, and
the chunks behind the hits are read back with the owner in the query.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from flask import Flask, current_app

from app.concurrency import run_blocking
from app.errors import NotFound, ValidationFailed
from app.extensions import db

from . import indexing, runtime
from .models import RagChunk, RagCollection, RagDocument

MODES = ("hybrid", "dense", "lexical")
FILTER_KEYS = ("source_type", "path_prefix", "language", "metadata", "document_id")


@dataclass(frozen=True)
class CollectionRef:
    """What a search needs of a collection, detached from the database session."""

    id: str
    embedder: str
    dimension: int
    index_version: int


@dataclass
class Query:
    owner_id: str
    text: str
    limit: int = 5
    mode: str = "hybrid"
    filters: dict[str, Any] = field(default_factory=dict)
    collection: str | None = None


def normalise_filters(filters: dict[str, Any] | None) -> dict[str, Any]:
    """Known keys as they are; any other key is a metadata equality (`{"team": "core"}`)."""
    out: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key, value in (filters or {}).items():
        if value is None:
            continue
        if key == "metadata":
            if not isinstance(value, dict):
                raise ValidationFailed({"filters.metadata": ["Must be an object of field: value."]})
            metadata.update(value)
        elif key in FILTER_KEYS:
            if not isinstance(value, str) or not value:
                raise ValidationFailed({f"filters.{key}": ["Must be a non-empty string."]})
            out[key] = value
        else:
            metadata[key] = value
    for key, value in metadata.items():
        if not isinstance(value, str | int | float | bool):
            raise ValidationFailed({f"filters.metadata.{key}": ["Must be a string, number or boolean."]})
    if metadata:
        out["metadata"] = metadata
    return out


def _collections(owner_id: str, ref: str | None) -> list[RagCollection]:
    statement = sa.select(RagCollection).where(RagCollection.owner_id == owner_id)
    if ref:
        column = RagCollection.id if ref.startswith("col_") else RagCollection.name
        found = list(db.session.scalars(statement.where(column == ref)))
        if not found:
            raise NotFound("No such collection.", details={"collection": ref})
        return found
    return list(db.session.scalars(statement.order_by(RagCollection.created_at)))


def _metadata_clause(key: str, value: Any) -> Any:
    element = RagChunk.meta[key]
    if isinstance(value, bool):
        return element.as_boolean() == value
    if isinstance(value, int):
        return element.as_integer() == value
    if isinstance(value, float):
        return element.as_float() == value
    return element.as_string() == value


def allowed_ids(owner_id: str, collection_id: str, filters: dict[str, Any]) -> np.ndarray | None:
    """Vector ids of the chunks passing the filters (None: no filter, everything passes)."""
    if not filters:
        return None
    statement = sa.select(RagChunk.vector_id).where(RagChunk.owner_id == owner_id,
                                                    RagChunk.collection_id == collection_id,
                                                    RagChunk.active.is_(True))
    if "source_type" in filters:
        statement = statement.where(RagChunk.source_type == filters["source_type"])
    if "language" in filters:
        statement = statement.where(RagChunk.language == filters["language"])
    if "path_prefix" in filters:
        statement = statement.where(RagChunk.path.startswith(filters["path_prefix"], autoescape=True))
    if "document_id" in filters:
        statement = statement.where(RagChunk.document_id == filters["document_id"])
    for key, value in filters.get("metadata", {}).items():
        statement = statement.where(_metadata_clause(key, value))
    return np.fromiter(db.session.scalars(statement), dtype=np.int64)


def _rank(app: Flask, query: Query, collections: list[CollectionRef],
          allowed: dict[str, np.ndarray | None]) -> list[tuple[int, float]]:
    """The CPU part, in a real thread: (vector id, score) best first."""
    with app.app_context():
        settings = runtime.index_settings()
        candidates = max(query.limit * 4, int(app.config["RAG_SEARCH_CANDIDATES"]))
        dense: list[tuple[int, float]] = []
        lexical: list[tuple[int, float]] = []
        vectors: dict[str, np.ndarray] = {}
        for collection in collections:
            ids = allowed[collection.id]
            if ids is not None and not len(ids):
                continue
            snapshot = indexing.snapshot_of(collection)
            if not snapshot.count:
                continue
            if query.mode in ("dense", "hybrid"):
                if collection.embedder not in vectors:
                    vectors[collection.embedder] = runtime.embedder(name=collection.embedder).encode([query.text])[0]
                dense.extend(snapshot.vectors.search(vectors[collection.embedder], candidates, settings, ids))
            if query.mode in ("lexical", "hybrid"):
                mask = None if ids is None else snapshot.lexical.mask(ids)
                lexical.extend(snapshot.lexical.search(query.text, candidates, mask))
        db.session.remove()
    dense.sort(key=lambda hit: -hit[1])
    lexical.sort(key=lambda hit: -hit[1])
    if query.mode == "dense":
        return dense
    if query.mode == "lexical":
        return lexical
    if app.config["RAG_HYBRID_FUSION"] == "weighted":
        return fuse_weighted(dense[:candidates], lexical[:candidates], float(app.config["RAG_HYBRID_DENSE_WEIGHT"]))
    return fuse([dense[:candidates], lexical[:candidates]], int(app.config["RAG_RRF_K"]))


def fuse(rankings: Iterable[list[tuple[int, float]]], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score = sum over rankings of 1 / (k + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (vector_id, _score) in enumerate(ranking, start=1):
            scores[vector_id] = scores.get(vector_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def fuse_weighted(dense: list[tuple[int, float]], lexical: list[tuple[int, float]],
                  dense_weight: float = 0.6) -> list[tuple[int, float]]:
    """Convex combination of min-max normalised scores (a hit missing from one list scores 0 there)."""
    scores: dict[int, float] = {}
    for ranking, weight in ((dense, dense_weight), (lexical, 1.0 - dense_weight)):
        if not ranking:
            continue
        values = [score for _, score in ranking]
        low, span = min(values), (max(values) - min(values)) or 1.0
        for vector_id, score in ranking:
            scores[vector_id] = scores.get(vector_id, 0.0) + weight * (score - low) / span
    return sorted(scores.items(), key=lambda item: -item[1])


def search(query: Query) -> dict[str, Any]:
    started = time.perf_counter()
    if query.mode not in MODES:
        raise ValidationFailed({"mode": [f"Must be one of: {', '.join(MODES)}."]})
    filters = normalise_filters(query.filters)
    query.filters = filters
    collections = [CollectionRef(c.id, c.embedder, c.dimension, c.index_version)
                   for c in _collections(query.owner_id, query.collection)]
    allowed = {c.id: allowed_ids(query.owner_id, c.id, filters) for c in collections}
    db.session.rollback()  # release the connection while the thread works
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    ranked = run_blocking(_rank, app, query, collections, allowed) if collections else []
    results = _results(query.owner_id, ranked[:query.limit])
    return {"results": results, "total": len(results), "query_time": round(time.perf_counter() - started, 6)}


def _results(owner_id: str, ranked: list[tuple[int, float]]) -> list[dict[str, Any]]:
    if not ranked:
        return []
    rows = db.session.execute(
        sa.select(RagChunk, RagDocument.source, RagDocument.meta)
        .join(RagDocument, RagDocument.id == RagChunk.document_id)
        .where(RagChunk.vector_id.in_([vector_id for vector_id, _ in ranked]), RagChunk.owner_id == owner_id,
               RagChunk.active.is_(True))).all()
    by_id = {row[0].vector_id: row for row in rows}
    results = []
    for vector_id, score in ranked:
        row = by_id.get(vector_id)
        if row is None:
            continue  # removed since the index version was published
        chunk, source, document_meta = row
        metadata = {**(chunk.meta or {})}
        metadata.update({
            "source": chunk.path or source, "source_type": chunk.source_type, "chunk_id": chunk.id,
            "document_id": chunk.document_id, "collection_id": chunk.collection_id, "path": chunk.path,
            "language": chunk.language, "symbol": chunk.symbol, "start_line": chunk.start_line,
            "end_line": chunk.end_line,
        })
        results.append({"content": chunk.content, "score": round(float(score), 6), "metadata": metadata})
    return results


def retriever(owner_id: str, query: str, top_k: int = 5, **filters: Any) -> list[dict[str, Any]]:
    """The app's retriever (app/retrieval.py): agent flows' rag_search nodes call this."""
    collection = filters.pop("collection", None)
    mode = filters.pop("mode", "hybrid")
    found = search(Query(owner_id=owner_id, text=query, limit=top_k, mode=mode, filters=filters,
                         collection=collection))
    return [{"content": r["content"], "score": r["score"], "document_id": r["metadata"]["document_id"],
             "path": r["metadata"]["path"], "metadata": r["metadata"]} for r in found["results"]]
