"""The indexing pipeline: extract -> chunk -> embed (only what is new) -> stage -> publish.

Crash safety: chunks are staged `active=False` (invisible to searches). The
new index version is written to disk in full, then one transaction checks
that the collection is still at the version it started from, switches the
collection to the new version, activates the staged chunks and deletes the
ones they replace. A process killed at any point before that commit leaves
the previous version searchable, exactly as it was; staged leftovers are
removed by the next run.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from flask import Flask, current_app

from app import tasks
from app.concurrency import run_blocking
from app.errors import ApiError
from app.extensions import db
from app.ids import utcnow
from app.tasks import Job

from . import chunking, embedders, runtime
from .index_store import Snapshot
from .models import FAILED, INDEXING, READY, RagChunk, RagCollection, RagDocument, new_vector_id
from .sources import Extracted, SourceFile, github, url as url_source
from .sources.files import UnsupportedMedia

log = logging.getLogger("lunaos.rag")
STAGING_TTL = timedelta(hours=6)  # staged rows older than this, of no running job, are leftovers
PUBLISH_ATTEMPTS = 8


class Cancelled(Exception):
    pass


@dataclass
class Progress:
    """How a run reports: `report(fraction 0..1, message)`, and `cancelled()` to stop early."""

    report: Callable[[float, str], None] = lambda fraction, message: None
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class RunStats:
    documents: int = 0
    files: int = 0
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    failed_documents: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "files": self.files, "chunks": self.chunks, "embedded": self.embedded,
                "reused": self.reused, "failed_documents": self.failed_documents}


def chunk_hash(embedder_name: str, content: str) -> str:
    import hashlib

    return hashlib.sha256(f"{embedder_name}\0{content}".encode("utf-8", "surrogatepass")).hexdigest()


# --- extraction -----------------------------------------------------------------------------------

def extract(document: RagDocument) -> Extracted:
    config = current_app.config
    if document.source_type == "url":
        return url_source.extract(document.source, runtime.url_limits(), runtime.allowed_hosts())
    if document.source_type == "github":
        limits = runtime.url_limits()
        limits = type(limits)(timeout=limits.timeout * 3, max_bytes=int(config["RAG_GITHUB_MAX_BYTES"]),
                              max_redirects=limits.max_redirects)
        return github.extract(document.source, api_url=str(config["RAG_GITHUB_API_URL"]),
                              token=str(config["RAG_GITHUB_TOKEN"] or ""), limits=limits,
                              allowed_hosts=runtime.allowed_hosts(),
                              max_file_bytes=int(config["RAG_MAX_FILE_BYTES"]), max_files=int(config["RAG_MAX_FILES"]))
    if document.content is None:
        raise UnsupportedMedia("The document has no stored content to index.")
    return Extracted(files=[SourceFile(path=document.path, text=document.content, language=document.language)])


# --- the run ------------------------------------------------------------------------------------

@dataclass
class _Prepared:
    """A document chunked and waiting for the embeddings of its new chunks."""

    document_id: str
    pending: list[tuple[SourceFile, chunking.Chunk]]
    hashes: list[str]
    failures: list[dict]
    meta: dict


def run(collection_id: str, document_ids: list[str], run_id: str, progress: Progress | None = None) -> RunStats:
    """Index these documents of one collection (inside an app context).

    Documents are chunked one by one, and their new chunks embedded together once about
    RAG_EMBED_WINDOW of them are waiting: the model works on large, length-sorted batches whatever
    the size of the files (small files one by one would waste much of its time on padding and calls).
    """
    progress = progress or Progress()
    stats = RunStats(documents=len(document_ids))
    collection = db.session.get(RagCollection, collection_id)
    if collection is None:
        raise tasks.JobError("the collection was deleted")
    embedder = runtime.embedder(name=collection.embedder)
    clean_staging(collection_id, run_id)
    staged: list[str] = []
    window: list[_Prepared] = []
    known: dict[str, bytes] = {}
    limit = int(current_app.config["RAG_EMBED_WINDOW"])
    total = max(len(document_ids), 1)

    def flush() -> None:
        done = len(staged) + len(stats.failed_documents)
        texts = {h: piece.content for p in window for h, (_, piece) in zip(p.hashes, p.pending, strict=True)}
        # Longest first, so each batch holds texts of about one length: little padding (as one big encode call).
        missing = sorted(dict.fromkeys(h for p in window for h in p.hashes if h not in known),
                         key=lambda h: -len(texts[h]))
        batch = max(int(current_app.config["RAG_EMBED_BATCH_SIZE"]) * 4, 1)
        try:
            for start in range(0, len(missing), batch):
                if progress.cancelled():
                    raise Cancelled()
                group = missing[start:start + batch]
                encoded = run_blocking(embedders.prepare(embedder).encode, [texts[h] for h in group])
                for h, vector in zip(group, encoded, strict=True):
                    known[h] = np.asarray(vector, dtype=np.float32).tobytes()
                stats.embedded += len(group)
                fraction = (start + len(group)) / max(len(missing), 1)
                progress.report(0.9 * (done + fraction * len(window)) / total,
                                f"embedded {start + len(group)} of {len(missing)} new chunks")
        except Cancelled:
            raise
        except Exception as error:  # the embedder failed: every document waiting for it fails
            log.exception("embedding failed")
            for prepared in window:
                _fail(prepared.document_id, f"embedding failed: {type(error).__name__}: {error}"[:1000], stats)
            window.clear()
            return
        for prepared in window:
            stage(prepared, embedder, run_id, known, stats)
            staged.append(prepared.document_id)
        window.clear()

    for position, document_id in enumerate(document_ids):
        if progress.cancelled():
            raise Cancelled()
        document = db.session.get(RagDocument, document_id)
        if document is None or document.collection_id != collection_id:
            continue  # deleted meanwhile
        progress.report(0.9 * position / total, f"{document.path or document.source}: reading")
        document.status, document.error, document.failures = INDEXING, None, []
        db.session.commit()
        try:
            prepared = prepare(document, embedder)
        except ApiError as error:
            _fail(document_id, f"{error.code}: {error.message}", stats)
            continue
        except Exception as error:  # one bad document must not stop the others
            log.exception("indexing document %s failed", document_id)
            _fail(document_id, f"{type(error).__name__}: {error}"[:1000], stats)
            continue
        known.update(known_embeddings(collection_id, {h for h in prepared.hashes if h not in known}))
        stats.reused += sum(1 for h in prepared.hashes if h in known)
        window.append(prepared)
        if sum(1 for p in window for h in p.hashes if h not in known) >= limit:
            flush()
    flush()
    progress.report(0.92, "publishing the index")
    publish(collection_id, run_id, staged)
    progress.report(1.0, f"indexed {len(staged)} of {len(document_ids)} documents")
    return stats


def _fail(document_id: str, message: str, stats: RunStats) -> None:
    db.session.rollback()
    document = db.session.get(RagDocument, document_id)
    if document is None:
        return
    document.status, document.error = FAILED, message
    stats.failed_documents.append(document.id)
    db.session.commit()


def prepare(document: RagDocument, embedder: Any) -> _Prepared:
    """Extract and chunk one document (no embedding yet)."""
    extracted = extract(document)
    failures = list(extracted.failures)
    meta = {**extracted.meta, **(document.meta or {})} if extracted.meta else dict(document.meta or {})
    budget = runtime.budget()
    if budget.max_tokens > embedder.max_tokens - 8:
        budget = chunking.Budget(max_tokens=embedder.max_tokens - 8, overlap=budget.overlap,
                                 min_tokens=budget.min_tokens)
    pending: list[tuple[SourceFile, chunking.Chunk]] = []
    for file in extracted.files:
        strategy = document.chunking_strategy or chunking.default_strategy(file.language)
        try:
            # CPU work goes to a real thread: under gevent an in-process job is a greenlet of the web worker.
            pieces = run_blocking(chunking.chunk, file.text, strategy, language=file.language, budget=budget,
                                  embedder=embedders.prepare(embedder),
                                  semantic_percentile=float(current_app.config["RAG_SEMANTIC_PERCENTILE"]))
        except Exception as error:
            log.warning("chunking %s failed", file.path, exc_info=True)
            failures.append({"path": file.path, "error": f"could not be chunked: {type(error).__name__}: {error}"})
            continue
        pending.extend((file, piece) for piece in pieces)
    if not pending and extracted.files and not failures:
        failures.append({"path": document.path, "error": "no text to index"})
    hashes = [chunk_hash(embedder.name, piece.content) for _, piece in pending]
    files = len({id(file) for file, _ in pending})
    return _Prepared(document.id, pending, hashes, failures, {**meta, "_files": files})


def stage(prepared: _Prepared, embedder: Any, run_id: str, vectors: dict[str, bytes], stats: RunStats) -> None:
    """Write one document's chunks, inactive, with their embeddings."""
    from app.ids import new_id

    document = db.session.get(RagDocument, prepared.document_id)
    if document is None:
        return  # deleted meanwhile
    meta = dict(prepared.meta)
    stats.files += meta.pop("_files", 0)
    document.meta = meta
    rows = []
    for ordinal, ((file, piece), digest) in enumerate(zip(prepared.pending, prepared.hashes, strict=True)):
        rows.append(dict(id=new_id("chk"), created_at=utcnow(), vector_id=new_vector_id(),
                         owner_id=document.owner_id, collection_id=document.collection_id, document_id=document.id,
                         active=False, job_id=run_id, ordinal=ordinal, content=piece.content, content_hash=digest,
                         embedding=vectors[digest], token_count=piece.token_count,
                         source_type=document.source_type, path=(file.path or document.path),
                         language=file.language, symbol=piece.symbol, start_line=piece.start_line,
                         end_line=piece.end_line, meta={**meta, **file.meta, **piece.meta}))
    for start in range(0, len(rows), 500):
        db.session.execute(sa.insert(RagChunk), rows[start:start + 500])
    document.failures = prepared.failures[:500]
    document.chunk_count = len(rows)
    stats.chunks += len(rows)
    db.session.commit()


def known_embeddings(collection_id: str, hashes: set[str]) -> dict[str, bytes]:
    """Embeddings already computed for these chunk texts in this collection: no need to embed them again."""
    found: dict[str, bytes] = {}
    wanted = list(hashes)
    for start in range(0, len(wanted), 500):
        rows = db.session.execute(sa.select(RagChunk.content_hash, RagChunk.embedding).where(
            RagChunk.collection_id == collection_id, RagChunk.content_hash.in_(wanted[start:start + 500])))
        for digest, embedding in rows:
            found.setdefault(digest, bytes(embedding))
    return found


def clean_staging(collection_id: str, run_id: str) -> None:
    """Drop inactive rows left by an earlier attempt of this run, by jobs that ended (a killed worker's job is
    failed by the reaper) and by job-less runs (the CLI) that died long ago."""
    cutoff = utcnow() - STAGING_TTL
    finished = sa.select(Job.id).where(Job.status.in_(tasks.TERMINAL))
    running = sa.select(Job.id).where(Job.status.in_(tasks.ACTIVE))
    db.session.execute(sa.delete(RagChunk).where(
        RagChunk.collection_id == collection_id, RagChunk.active.is_(False),
        sa.or_(RagChunk.job_id == run_id, RagChunk.job_id.in_(finished),
               # CLI runs have no job row: theirs are left alone until they are surely dead
               sa.and_(RagChunk.created_at < cutoff, sa.or_(RagChunk.job_id.is_(None),
                                                             RagChunk.job_id.not_in(running))))))
    db.session.commit()


# --- publishing ---------------------------------------------------------------------------------

def _vectors(rows: list[Any], dimension: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, dimension), dtype=np.float32)
    return np.frombuffer(b"".join(bytes(r.embedding) for r in rows), dtype=np.float32).reshape(len(rows), dimension)


def live_rows(collection_id: str) -> list[Any]:
    return list(db.session.execute(sa.select(RagChunk.vector_id, RagChunk.embedding, RagChunk.content)
                                   .where(RagChunk.collection_id == collection_id, RagChunk.active.is_(True))
                                   .order_by(RagChunk.vector_id)))


def rebuild_source(collection_id: str, dimension: int) -> Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]:
    """What a process without the files uses to rebuild the published version from the database."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def load() -> tuple[np.ndarray, np.ndarray, list[str]]:
        with app.app_context():
            rows = live_rows(collection_id)
            db.session.remove()
        ids = np.asarray([r.vector_id for r in rows], dtype=np.int64)
        return ids, _vectors(rows, dimension), [r.content for r in rows]

    return load


def snapshot_of(collection: Any) -> Snapshot:
    """The published index of a collection (a row or anything with id, index_version, dimension)."""
    return runtime.store().get(collection.id, collection.index_version, collection.dimension,
                               rebuild_source(collection.id, collection.dimension))


def _live_after(collection_id: str, dimension: int, replaced: set[int], add_ids: np.ndarray,
                add_vectors: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """Every live vector once this change is applied: for indexes that must be rebuilt rather than edited."""

    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def live() -> tuple[np.ndarray, np.ndarray]:
        with app.app_context():  # called from a worker thread: a session of its own
            rows = [r for r in live_rows(collection_id) if r.vector_id not in replaced]
            db.session.remove()
        ids = np.asarray([r.vector_id for r in rows], dtype=np.int64)
        return np.concatenate([ids, add_ids]), np.vstack([_vectors(rows, dimension), add_vectors])

    return live


def publish(collection_id: str, run_id: str | None, document_ids: list[str],
            deleting: bool = False) -> int | None:
    """Make the staged chunks of `run_id` live for `document_ids`, replacing their previous chunks
    (or, with `deleting`, remove those documents). Returns the new version (None: nothing changed)."""
    store = runtime.store()
    for _attempt in range(PUBLISH_ATTEMPTS):
        db.session.rollback()
        collection = db.session.get(RagCollection, collection_id, populate_existing=True)
        if collection is None:
            raise tasks.JobError("the collection was deleted")
        base_version = collection.index_version
        staged = [] if run_id is None else list(db.session.execute(
            sa.select(RagChunk.vector_id, RagChunk.embedding, RagChunk.content).where(
                RagChunk.collection_id == collection_id, RagChunk.job_id == run_id, RagChunk.active.is_(False),
                RagChunk.document_id.in_(document_ids or [""]))))
        replaced = [r for (r,) in db.session.execute(sa.select(RagChunk.vector_id).where(
            RagChunk.collection_id == collection_id, RagChunk.active.is_(True),
            RagChunk.document_id.in_(document_ids or [""])))]
        if not staged and not replaced and not deleting:
            _finish_documents(collection_id, document_ids, run_id)
            db.session.commit()
            return None
        base = snapshot_of(collection)
        add_ids = np.asarray([r.vector_id for r in staged], dtype=np.int64)
        add_vectors = _vectors(staged, collection.dimension)
        live = _live_after(collection_id, collection.dimension, set(replaced), add_ids, add_vectors)
        started = time.monotonic()
        version = store.next_version(base_version)
        snapshot = run_blocking(_next_snapshot, store, base, version, add_ids, add_vectors, staged, replaced, live)
        moved = db.session.execute(sa.update(RagCollection)
                                   .where(RagCollection.id == collection_id,
                                          RagCollection.index_version == base_version)
                                   .values(index_version=version, updated_at=utcnow()))
        if moved.rowcount != 1:  # another writer published first: start again from its version
            db.session.rollback()
            store.discard(collection_id, version)
            continue
        if replaced:
            for start in range(0, len(replaced), 500):
                db.session.execute(sa.delete(RagChunk).where(RagChunk.collection_id == collection_id,
                                                             RagChunk.vector_id.in_(replaced[start:start + 500])))
        if deleting:
            db.session.execute(sa.delete(RagChunk).where(RagChunk.collection_id == collection_id,
                                                         RagChunk.document_id.in_(document_ids)))
            db.session.execute(sa.delete(RagDocument).where(RagDocument.collection_id == collection_id,
                                                            RagDocument.id.in_(document_ids)))
        else:
            _finish_documents(collection_id, document_ids, run_id)
        db.session.commit()
        store.remember(snapshot)
        store.prune(collection_id, keep={version, base_version})
        log.info("collection %s: version %d published (%d vectors, +%d -%d) in %.2fs", collection_id, version,
                 snapshot.count, len(add_ids), len(replaced), time.monotonic() - started)
        return version
    raise tasks.JobError("the collection changed too often while publishing; try again")


def _next_snapshot(store: Any, base: Snapshot, version: int, add_ids: np.ndarray, add_vectors: np.ndarray,
                   staged: list[Any], replaced: list[int], live: Callable[[], tuple[np.ndarray, np.ndarray]]
                   ) -> Snapshot:
    """Build and write the next version (CPU and disk work, in a real thread)."""
    vectors = base.vectors.changed(add_ids, add_vectors, replaced, store.settings, live)
    lexical = base.lexical.add_remove([int(i) for i in add_ids], [r.content for r in staged], replaced)
    snapshot = Snapshot(base.collection_id, version, vectors, lexical)
    store.write(snapshot)
    return snapshot


def _finish_documents(collection_id: str, document_ids: list[str], run_id: str | None) -> None:
    if run_id is not None:
        db.session.execute(sa.update(RagChunk).where(
            RagChunk.collection_id == collection_id, RagChunk.job_id == run_id, RagChunk.active.is_(False),
            RagChunk.document_id.in_(document_ids or [""])).values(active=True, job_id=None))
    if document_ids:
        db.session.execute(sa.update(RagDocument).where(RagDocument.id.in_(document_ids))
                           .values(status=READY, error=None, indexed_at=utcnow(), updated_at=utcnow()))


def remove_documents(app: Flask, collection_id: str, document_ids: list[str]) -> None:
    """Delete documents with their chunks from the database and from both indexes."""
    with app.app_context():
        try:
            publish(collection_id, None, document_ids, deleting=True)
        finally:
            db.session.remove()


def rebuild(collection_id: str) -> int:
    """Publish a fresh version built from the database alone (`flask rag reindex`)."""
    store = runtime.store()
    for _attempt in range(PUBLISH_ATTEMPTS):
        db.session.rollback()
        collection = db.session.get(RagCollection, collection_id, populate_existing=True)
        if collection is None:
            raise LookupError(collection_id)
        ids, vectors, texts = rebuild_source(collection_id, collection.dimension)()
        version = store.next_version(collection.index_version)
        snapshot = store.build(collection_id, version, collection.dimension, ids, vectors, texts)
        store.write(snapshot)
        moved = db.session.execute(sa.update(RagCollection).where(
            RagCollection.id == collection_id, RagCollection.index_version == collection.index_version)
            .values(index_version=version, updated_at=utcnow()))
        if moved.rowcount != 1:
            db.session.rollback()
            store.discard(collection_id, version)
            continue
        db.session.commit()
        store.remember(snapshot)
        store.prune(collection_id, keep={version, collection.index_version})
        return version
    raise RuntimeError("the collection changed too often while rebuilding; try again")
