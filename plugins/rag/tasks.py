"""The indexing jobs (`rag.index` for code files, `rag.ingest` for one source), run by app/tasks."""
from __future__ import annotations

from typing import Any

from app.tasks import JobCancelled, JobContext, JobError, task

from . import indexing


def _run(ctx: JobContext, collection_id: str, document_ids: list[str]) -> dict[str, Any]:
    progress = indexing.Progress(report=lambda fraction, message: ctx.progress(100 * fraction, message),
                                 cancelled=ctx.cancelled)
    try:
        stats = indexing.run(collection_id, list(document_ids), ctx.job_id, progress)
    except indexing.Cancelled:
        raise JobCancelled() from None
    if stats.failed_documents and len(stats.failed_documents) == len(document_ids):
        from app.extensions import db

        from .models import RagDocument

        first = db.session.get(RagDocument, stats.failed_documents[0])
        reason = first.error if first is not None else "unknown error"
        noun = "document" if len(document_ids) == 1 else f"all {len(document_ids)} documents"
        raise JobError(f"indexing failed for {noun}: {reason}")
    return stats.as_dict()


@task("rag.index")
def index_files(ctx: JobContext, collection_id: str, document_ids: list[str]) -> dict[str, Any]:
    """Index (or re-index) code and text files of a collection."""
    return _run(ctx, collection_id, document_ids)


@task("rag.ingest")
def ingest_source(ctx: JobContext, collection_id: str, document_ids: list[str]) -> dict[str, Any]:
    """Fetch, chunk, embed and index one document (text, file, url or github)."""
    return _run(ctx, collection_id, document_ids)
