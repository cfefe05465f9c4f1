"""Search: dense (FAISS), lexical (BM25) or hybrid (a weighted sum of both rankers' standardised scores, or
reciprocal rank fusion), with filters.

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

from . import embedders, indexing, runtime
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
    return hybrid(dense[:candidates], lexical[:candidates], str(app.config["RAG_HYBRID_FUSION"]),
                  float(app.config["RAG_HYBRID_DENSE_WEIGHT"]), int(app.config["RAG_RRF_K"]))


def hybrid(dense: list[tuple[int, float]], lexical: list[tuple[int, float]], fusion: str = "weighted",
           dense_weight: float = 0.6, rrf_k: int = 60) -> list[tuple[int, float]]:
    """Both rankers' candidates in one ranking, as RAG_HYBRID_FUSION says."""
    if fusion == "rrf":
        return fuse([dense, lexical], rrf_k)
    return fuse_weighted(dense, lexical, dense_weight)


def fuse(rankings: Iterable[list[tuple[int, float]]], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score = sum over rankings of 1 / (k + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (vector_id, _score) in enumerate(ranking, start=1):
            scores[vector_id] = scores.get(vector_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def fuse_weighted(dense: list[tuple[int, float]], lexical: list[tuple[int, float]],
                  dense_weight: float = 0.6) -> list[tuple[int, float]]:
    """Convex combination of standardised scores: dense_weight * z(cosine) + (1 - dense_weight) * z(BM25).

    Each ranker's scores become z-scores over its own candidates, which puts cosine similarity and the
    unbounded BM25 on one scale and keeps how far apart the hits are (rank fusion forgets that); a hit
    missing from one list takes that list's lowest z-score there, since it scored below its cut-off."""
    scores: dict[int, float] = {}
    floors: list[tuple[set[int], float]] = []
    for ranking, weight in ((dense, dense_weight), (lexical, 1.0 - dense_weight)):
        if not ranking:
            continue
        values = np.fromiter((score for _, score in ranking), dtype=np.float64, count=len(ranking))
        mean, spread = float(values.mean()), float(values.std()) or 1.0
        for (vector_id, _score), value in zip(ranking, values, strict=True):
            scores[vector_id] = scores.get(vector_id, 0.0) + weight * (float(value) - mean) / spread
        floors.append(({vector_id for vector_id, _ in ranking}, weight * (float(values.min()) - mean) / spread))
    if len(floors) == 2:
        for present, floor in floors:
            for vector_id in scores:
                if vector_id not in present:
                    scores[vector_id] += floor
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
    if query.mode != "lexical":
        for name in {c.embedder for c in collections}:
            embedders.prepare(runtime.embedder(name=name))
    db.session.rollback()  # release the connection while the thread works
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    ranked = run_blocking(_rank, app, query, collections, allowed) if collections else []
    results = _results(query.owner_id, ranked[:query.limit])
    return {"results": results, "total": len(results), "query_time": round(time.perf_counter() - started, 6)}


_RESULT_COLUMNS = (RagChunk.vector_id, RagChunk.owner_id, RagChunk.active, RagChunk.id, RagChunk.content,
                   RagChunk.meta, RagChunk.path, RagChunk.source_type, RagChunk.document_id, RagChunk.collection_id,
                   RagChunk.language, RagChunk.symbol, RagChunk.start_line, RagChunk.end_line, RagDocument.source)


def _results(owner_id: str, ranked: list[tuple[int, float]]) -> list[dict[str, Any]]:
    if not ranked:
        return []
    # Looked up by vector id alone, so both backends use its unique index (with the owner in the WHERE clause,
    # SQLite's planner walked the owner's index: every chunk of the user); owner and state are checked here.
    # Only the columns a result shows are read (not the stored embedding).
    rows = db.session.execute(
        sa.select(*_RESULT_COLUMNS).join(RagDocument, RagDocument.id == RagChunk.document_id)
        .where(RagChunk.vector_id.in_([vector_id for vector_id, _ in ranked]))).all()
    by_id = {row.vector_id: row for row in rows if row.owner_id == owner_id and row.active}
    results = []
    for vector_id, score in ranked:
        row = by_id.get(vector_id)
        if row is None:
            continue  # removed since the index version was published
        metadata = {**(row.meta or {})}
        metadata.update({
            "source": row.path or row.source, "source_type": row.source_type, "chunk_id": row.id,
            "document_id": row.document_id, "collection_id": row.collection_id, "path": row.path,
            "language": row.language, "symbol": row.symbol, "start_line": row.start_line,
            "end_line": row.end_line,
        })
        results.append({"content": row.content, "score": round(float(score), 6), "metadata": metadata})
    return results


def retriever(owner_id: str, query: str, top_k: int = 5, **filters: Any) -> list[dict[str, Any]]:
    """The app's retriever (app/retrieval.py): agent flows' rag_search nodes call this."""
    collection = filters.pop("collection", None)
    mode = filters.pop("mode", "hybrid")
    found = search(Query(owner_id=owner_id, text=query, limit=top_k, mode=mode, filters=filters,
                         collection=collection))
    return [{"content": r["content"], "score": r["score"], "document_id": r["metadata"]["document_id"],
             "path": r["metadata"]["path"], "metadata": r["metadata"]} for r in found["results"]]
