"""Collections and documents: create, list, delete, and start the jobs that index them.

Everything here is scoped to an owner: another user's collection or document
is reported exactly like a missing one.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app import tasks
from app.concurrency import run_blocking
from app.errors import ApiError, Conflict, NotFound, ValidationFailed
from app.extensions import db
from app.http import Page, paginate
from app.tasks import Job

from . import indexing, runtime, ssrf
from .chunking import STRATEGIES, detect_language
from .models import FAILED, PENDING, READY, RagChunk, RagCollection, RagDocument
from .sources import github
from .sources.files import to_text

DEFAULT_COLLECTION = "default"


class Gone(ApiError):
    status, code = 409, "CONFLICT"
    message = "Something this request refers to (your account, a collection) was deleted meanwhile."


def _commit() -> None:
    """Commit; a foreign key that no longer resolves (a concurrent delete) is a 409, not a 500."""
    try:
        db.session.commit()
    except sa.exc.IntegrityError as error:
        db.session.rollback()
        raise Gone() from error


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- collections ------------------------------------------------------------------------------------

def _new_collection(owner_id: str, name: str, description: str | None = None) -> RagCollection:
    embedder_name = str(current_app.config["RAG_EMBEDDER"])
    dimension = runtime.embedder().dimension
    return RagCollection(owner_id=owner_id, name=name, description=description, embedder=embedder_name,
                         dimension=dimension, index_version=0)


def create_collection(owner_id: str, name: str, description: str | None = None) -> RagCollection:
    if db.session.scalar(sa.select(RagCollection.id).where(RagCollection.owner_id == owner_id,
                                                           RagCollection.name == name)):
        raise Conflict(f"You already have a collection named {name!r}.", code="COLLECTION_EXISTS",
                       details={"name": name})
    collection = _new_collection(owner_id, name, description)
    db.session.add(collection)
    try:
        db.session.commit()
    except sa.exc.IntegrityError as error:
        db.session.rollback()
        if find_collection(owner_id, name) is None:
            raise Gone() from error
        raise Conflict(f"You already have a collection named {name!r}.", code="COLLECTION_EXISTS",
                       details={"name": name}) from None
    return collection


def find_collection(owner_id: str, ref: str) -> RagCollection | None:
    """By id or by name, among the owner's collections."""
    column = RagCollection.id if ref.startswith("col_") else RagCollection.name
    return db.session.scalar(sa.select(RagCollection).where(RagCollection.owner_id == owner_id, column == ref))


def collection_for_write(owner_id: str, ref: str | None) -> RagCollection:
    """The named collection (created when a new name is given), or the owner's default one."""
    if ref:
        found = find_collection(owner_id, ref)
        if found is not None:
            return found
        if ref.startswith("col_"):
            raise NotFound("No such collection.", details={"collection": ref})
    name = ref or DEFAULT_COLLECTION
    collection = _new_collection(owner_id, name)
    db.session.add(collection)
    try:
        db.session.commit()
    except sa.exc.IntegrityError as error:  # created by a concurrent request, or the owner is gone
        db.session.rollback()
        found = find_collection(owner_id, name)
        if found is None:
            raise Gone() from error
        return found
    return collection


def get_collection(owner_id: str, ref: str) -> RagCollection:
    found = find_collection(owner_id, ref)
    if found is None:
        raise NotFound("No such collection.")
    return found


def list_collections(owner_id: str, page: int, per_page: int) -> Page:
    statement = (sa.select(RagCollection).where(RagCollection.owner_id == owner_id)
                 .order_by(RagCollection.created_at.desc(), RagCollection.id.desc()))
    return paginate(statement, page, per_page)


def collection_stats(collection_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    ids = list(collection_ids)
    stats = {i: {"documents": 0, "chunks": 0} for i in ids}
    if not ids:
        return stats
    for cid, count in db.session.execute(sa.select(RagDocument.collection_id, sa.func.count())
                                         .where(RagDocument.collection_id.in_(ids))
                                         .group_by(RagDocument.collection_id)):
        stats[cid]["documents"] = count
    for cid, count in db.session.execute(sa.select(RagChunk.collection_id, sa.func.count())
                                         .where(RagChunk.collection_id.in_(ids), RagChunk.active.is_(True))
                                         .group_by(RagChunk.collection_id)):
        stats[cid]["chunks"] = count
    return stats


def collection_view(collection: RagCollection, stats: dict[str, int] | None = None) -> dict[str, Any]:
    stats = stats or collection_stats([collection.id])[collection.id]
    snapshot = runtime.store().cached(collection.id)
    kind = snapshot.vectors.kind if snapshot and snapshot.version == collection.index_version else None
    return {"id": collection.id, "name": collection.name, "description": collection.description,
            "embedder": collection.embedder, "dimension": collection.dimension,
            "index_version": collection.index_version, "index_kind": kind,
            "documents": stats["documents"], "chunks": stats["chunks"],
            "created_at": collection.created_at, "updated_at": collection.updated_at}


def delete_collection(owner_id: str, ref: str) -> None:
    collection = get_collection(owner_id, ref)
    collection_id = collection.id
    # Explicit deletes, children first (the foreign keys cascade too, but a big collection is cheaper this way).
    db.session.execute(sa.delete(RagChunk).where(RagChunk.collection_id == collection_id))
    db.session.execute(sa.delete(RagDocument).where(RagDocument.collection_id == collection_id))
    db.session.execute(sa.delete(RagCollection).where(RagCollection.id == collection_id))
    db.session.commit()
    runtime.store().delete(collection_id)


# --- documents ----------------------------------------------------------------------------------

def _check_strategy(strategy: str | None) -> None:
    if strategy is not None and strategy not in STRATEGIES:
        raise ValidationFailed({"chunking_strategy": [f"Must be one of: {', '.join(STRATEGIES)}."]})


def _limit_size(size: int, what: str) -> None:
    limit = int(current_app.config["RAG_MAX_FILE_BYTES"])
    if size > limit:
        raise ApiError(f"{what} is {size} bytes; the limit is {limit} (RAG_MAX_FILE_BYTES).", status=413,
                       code="PAYLOAD_TOO_LARGE", details={"max_bytes": limit, "size": size})


def _start(owner_id: str, kind: str, collection: RagCollection, documents: list[RagDocument]) -> Job:
    job = tasks.enqueue(kind, {"collection_id": collection.id, "document_ids": [d.id for d in documents]},
                        owner_id=owner_id, timeout=int(current_app.config["RAG_JOB_TIMEOUT"]))
    db.session.execute(sa.update(RagDocument).where(RagDocument.id.in_([d.id for d in documents]))
                       .values(job_id=job.id))
    db.session.commit()
    return job


def ingest(owner_id: str, *, source_type: str, source: str | None, metadata: dict[str, Any],
           chunking_strategy: str | None, collection: str | None, path: str | None = None,
           content: str | None = None, content_base64: str | None = None,
           upload: tuple[str, bytes, str | None] | None = None) -> tuple[Job, RagDocument]:
    """Create one document from a source and start the job that indexes it."""
    _check_strategy(chunking_strategy)
    target = collection_for_write(owner_id, collection)
    document = RagDocument(owner_id=owner_id, collection_id=target.id, source_type=source_type,
                           chunking_strategy=chunking_strategy, meta=dict(metadata or {}), status=PENDING,
                           failures=[], chunk_count=0, size_bytes=0)
    if source_type == "text":
        text = content if content is not None else source
        if not text or not text.strip():
            raise ValidationFailed({"source": ["Give the text to index in `source` (or `content`)."]})
        _limit_size(len(text.encode("utf-8", "replace")), "The text")
        document.source = path or (metadata or {}).get("title") or "text"
        document.path = path
        document.language = detect_language(path) or "text"
        _set_content(document, text)
    elif source_type == "file":
        name, data, content_type = _file_input(source, path, content, content_base64, upload)
        _limit_size(len(data), name or "The file")
        text, language = to_text(name, data, content_type)
        document.source = name or "upload"
        document.path = name
        document.language = language
        document.size_bytes = len(data)
        _set_content(document, text)
    elif source_type == "url":
        if not source:
            raise ValidationFailed({"source": ["Give the URL to fetch."]})
        # Refuse at once what the job would refuse (scheme, private targets); redirects are checked in the job.
        ssrf.check_url(source, runtime.allowed_hosts())
        document.source = document.path = source
    elif source_type == "github":
        if not source:
            raise ValidationFailed({"source": ["Give the repository as owner/repo."]})
        owner, repo, ref = github.parse(source)
        document.source = f"{owner}/{repo}" + (f"@{ref}" if ref else "")
    else:  # the schema allows nothing else
        raise ValidationFailed({"source_type": ["Must be one of: text, file, url, github."]})
    db.session.add(document)
    _commit()
    job = _start(owner_id, "rag.ingest", target, [document])
    return job, document


def _file_input(source: str | None, path: str | None, content: str | None, content_base64: str | None,
                upload: tuple[str, bytes, str | None] | None) -> tuple[str | None, bytes, str | None]:
    if upload is not None:
        return upload
    name = path or source
    if content is not None:
        return name, content.encode("utf-8"), None
    if content_base64 is not None:
        try:
            return name, base64.b64decode(content_base64, validate=True), None
        except (binascii.Error, ValueError):
            raise ValidationFailed({"content_base64": ["Not valid base64."]}) from None
    raise ValidationFailed({"file": ["Upload a file (multipart field `file`) or give `content` / `content_base64`."]})


def _set_content(document: RagDocument, text: str) -> None:
    document.content = text
    document.content_hash = content_hash(text)
    document.size_bytes = document.size_bytes or len(text.encode("utf-8", "replace"))


def index_files(owner_id: str, files: list[dict[str, Any]], collection: str | None,
                chunking_strategy: str | None = None) -> tuple[Job | None, RagCollection, list[str], list[str]]:
    """Upsert code/text files by path; only new or changed ones are indexed.

    Returns (job or None when nothing changed, collection, ids of documents to index, ids unchanged).
    """
    _check_strategy(chunking_strategy)
    paths = [f["path"] for f in files]
    if len(set(paths)) != len(paths):
        raise ValidationFailed({"files": ["Each path may appear once per request."]})
    if len(files) > int(current_app.config["RAG_MAX_FILES"]):
        raise ValidationFailed({"files": [f"At most {current_app.config['RAG_MAX_FILES']} files per request."]})
    for f in files:
        _limit_size(len(f["content"].encode("utf-8", "replace")), f["path"])
    target = collection_for_write(owner_id, collection)
    documents, changed, unchanged = upsert_files(owner_id, target, [
        (f["path"], f["content"], f.get("language"), f.get("metadata") or {}) for f in files], "code",
        chunking_strategy)
    _commit()
    job = _start(owner_id, "rag.index", target, changed) if changed else None
    return job, target, [d.id for d in changed], [d.id for d in unchanged]


def upsert_files(owner_id: str, collection: RagCollection, files: list[tuple[str, str, str | None, dict]],
                 source_type: str, chunking_strategy: str | None = None
                 ) -> tuple[list[RagDocument], list[RagDocument], list[RagDocument]]:
    """Documents for (path, text, language, metadata) files: (all, changed or new, unchanged). Not committed."""
    existing = {}
    paths = [f[0] for f in files]
    for start in range(0, len(paths), 500):
        for document in db.session.scalars(sa.select(RagDocument).where(
                RagDocument.collection_id == collection.id, RagDocument.path.in_(paths[start:start + 500]))):
            existing[document.path] = document
    all_documents, changed, unchanged = [], [], []
    for path, text, language, metadata in files:
        digest = content_hash(text)
        language = language or detect_language(path)
        document = existing.get(path)
        if (document is not None and document.content_hash == digest and document.status == READY
                and document.chunking_strategy == chunking_strategy and (document.meta or {}) == metadata):
            unchanged.append(document)
            all_documents.append(document)
            continue
        if document is None:
            document = RagDocument(owner_id=owner_id, collection_id=collection.id, source_type=source_type,
                                   source=path, path=path, failures=[], chunk_count=0)
            db.session.add(document)
        document.language = language
        document.chunking_strategy = chunking_strategy
        document.meta = metadata
        document.status = PENDING
        document.error = None
        document.size_bytes = len(text.encode("utf-8", "replace"))
        document.content = text
        document.content_hash = digest
        changed.append(document)
        all_documents.append(document)
    db.session.flush()
    return all_documents, changed, unchanged


def list_documents(owner_id: str, page: int, per_page: int, collection: str | None = None,
                   source_type: str | None = None, status: str | None = None, path_prefix: str | None = None) -> Page:
    statement = sa.select(RagDocument).where(RagDocument.owner_id == owner_id)
    if collection:
        statement = statement.where(RagDocument.collection_id == get_collection(owner_id, collection).id)
    if source_type:
        statement = statement.where(RagDocument.source_type == source_type)
    if status:
        statement = statement.where(RagDocument.status == status)
    if path_prefix:
        statement = statement.where(RagDocument.path.startswith(path_prefix, autoescape=True))
    statement = statement.order_by(RagDocument.created_at.desc(), RagDocument.id.desc())
    result = paginate(statement, page, per_page)
    _settle(result.items)
    return result


def get_document(owner_id: str, document_id: str) -> RagDocument:
    document = db.session.get(RagDocument, document_id)
    if document is None or document.owner_id != owner_id:
        raise NotFound("No such document.")
    _settle([document])
    return document


def _settle(documents: Iterable[RagDocument]) -> None:
    """Documents whose job ended without indexing them (killed worker, cancellation) are shown as failed."""
    waiting = {d.job_id: d for d in documents if d.status not in (READY, FAILED) and d.job_id}
    if not waiting:
        return
    for job_id, status, error in db.session.execute(sa.select(Job.id, Job.status, Job.error)
                                                    .where(Job.id.in_(list(waiting)))):
        if status in tasks.TERMINAL:
            document = waiting[job_id]
            document.status = FAILED
            document.error = document.error or error or f"the indexing job {status} before reaching this document"
            db.session.expunge(document)  # shown, not written: a retry of the job may still index it


def delete_document(owner_id: str, document_id: str) -> None:
    document = db.session.get(RagDocument, document_id)
    if document is None or document.owner_id != owner_id:
        raise NotFound("No such document.")
    collection_id = document.collection_id
    db.session.rollback()  # the removal below runs in a thread of its own, with its own session
    run_blocking(indexing.remove_documents, current_app._get_current_object(), collection_id, [document_id])


def job_view(owner_id: str, job_id: str) -> dict[str, Any]:
    job = db.session.get(Job, job_id)
    if job is None or job.owner_id != owner_id or not job.kind.startswith("rag."):
        raise NotFound("No such job.")
    payload = job.payload or {}
    document_ids = list(payload.get("document_ids") or [])
    counts = {"documents": len(document_ids), "ready": 0, "failed": 0, "pending": 0}
    failures: list[dict[str, Any]] = []
    for start in range(0, len(document_ids), 500):
        rows = db.session.scalars(sa.select(RagDocument).where(RagDocument.id.in_(document_ids[start:start + 500])))
        documents = list(rows)
        _settle(documents)
        for document in documents:
            bucket = document.status if document.status in ("ready", "failed") else "pending"
            counts[bucket] += 1
            if document.status == FAILED:
                failures.append({"document_id": document.id, "path": document.path or document.source,
                                 "error": document.error})
            for failure in document.failures or []:
                failures.append({"document_id": document.id, **failure})
    result = job.result if isinstance(job.result, dict) else {}
    for key in ("chunks", "embedded", "reused", "files"):
        if key in result:
            counts[key] = result[key]
    return {"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress, "message": job.message,
            "collection_id": payload.get("collection_id"), "document_ids": document_ids, "counts": counts,
            "failures": failures[:200], "error": job.error, "created_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at}

