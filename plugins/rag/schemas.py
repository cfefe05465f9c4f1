"""Request and response shapes of the rag plugin."""
from __future__ import annotations

import json
from typing import Any

import marshmallow as ma
from flask_smorest.fields import Upload
from marshmallow import validate

from app.http import PageArgs, Timestamp

from .models import DOCUMENT_STATUSES, SOURCE_TYPES, STRATEGIES
from .search import MODES

_COLLECTION_REF = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=100),
                                   metadata={"description": "Collection id or name (default: your `default` "
                                                            "collection, created on first use)."})
_STRATEGY = ma.fields.String(load_default=None, allow_none=True, validate=validate.OneOf(STRATEGIES),
                             metadata={"description": "Default: `code` for source files, `recursive` otherwise."})


class JsonObject(ma.fields.Dict):
    """An object; in multipart forms also its JSON text."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ma.ValidationError("Not valid JSON.") from None
        if not isinstance(value, dict):
            raise ma.ValidationError("Must be an object.")
        if len(json.dumps(value, default=str)) > 16_000:
            raise ma.ValidationError("At most 16000 characters of metadata.")
        return super()._deserialize(value, attr, data, **kwargs)


class FileUpload(Upload):
    """A multipart file (never a JSON value)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        from werkzeug.datastructures import FileStorage

        if not isinstance(value, FileStorage):
            raise ma.ValidationError("Send the file as multipart/form-data; in JSON use content or content_base64.")
        return value


class CollectionCreateSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=[validate.Length(min=1, max=100),
                                                     validate.Regexp(r"^(?!col_)[^\x00-\x1f/]+$",
                                                                     error="Use printable characters, no '/', "
                                                                           "and no 'col_' prefix.")])
    description = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class CollectionSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "col_01hx0c7k3m5r8v2w4y6z8a0b1c"})
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True, allow_none=True)
    embedder = ma.fields.String(required=True, metadata={"example": "minilm"})
    dimension = ma.fields.Integer(required=True)
    index_version = ma.fields.Integer(required=True, metadata={"description": "0 until something is indexed."})
    index_kind = ma.fields.String(required=True, allow_none=True,
                                  metadata={"description": "flat, hnsw or ivf, when loaded in this process."})
    documents = ma.fields.Integer(required=True)
    chunks = ma.fields.Integer(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class IndexFileSchema(ma.Schema):
    path = ma.fields.String(required=True, validate=validate.Length(min=1, max=1000),
                            metadata={"example": "src/app/service.py"})
    content = ma.fields.String(required=True, validate=validate.Length(min=1))
    language = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=40),
                                metadata={"description": "Default: from the file extension."})
    metadata = JsonObject(load_default=dict)


class IndexSchema(ma.Schema):
    collection = _COLLECTION_REF
    files = ma.fields.List(ma.fields.Nested(IndexFileSchema), required=True, validate=validate.Length(min=1))
    chunking_strategy = _STRATEGY


class IndexAcceptedSchema(ma.Schema):
    job_id = ma.fields.String(required=True, allow_none=True,
                              metadata={"description": "None when every file was unchanged (nothing to do)."})
    collection_id = ma.fields.String(required=True)
    document_ids = ma.fields.List(ma.fields.String(), required=True,
                                  metadata={"description": "New or changed files being indexed."})
    unchanged = ma.fields.List(ma.fields.String(), required=True,
                               metadata={"description": "Documents whose content is the same: not re-indexed."})


class IngestSchema(ma.Schema):
    """JSON, or multipart/form-data with the file in `file` (and `metadata` as JSON text)."""

    source_type = ma.fields.String(required=True, validate=validate.OneOf(("text", "file", "url", "github")))
    source = ma.fields.String(load_default=None, allow_none=True,
                              metadata={"description": "text: the text; url: the URL; github: owner/repo[@ref]; "
                                                       "file: the file name (JSON uploads)."})
    content = ma.fields.String(load_default=None, allow_none=True,
                               metadata={"description": "file (JSON): the file's text."})
    content_base64 = ma.fields.String(load_default=None, allow_none=True,
                                      metadata={"description": "file (JSON): the file's bytes, base64 (e.g. PDF)."})
    path = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=1000))
    metadata = JsonObject(load_default=dict)
    chunking_strategy = _STRATEGY
    collection = _COLLECTION_REF
    file = FileUpload(load_default=None, allow_none=True, metadata={"description": "multipart: the file."})


class IngestAcceptedSchema(ma.Schema):
    job_id = ma.fields.String(required=True)
    document_id = ma.fields.String(required=True)
    collection_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(DOCUMENT_STATUSES))


class SearchSchema(ma.Schema):
    query = ma.fields.String(required=True, validate=validate.Length(min=1, max=4000))
    limit = ma.fields.Integer(load_default=5, validate=validate.Range(min=1, max=100))
    mode = ma.fields.String(load_default="hybrid", validate=validate.OneOf(MODES), metadata={
        "description": "dense: MiniLM embeddings (cosine); lexical: BM25 over code-aware tokens (identifiers are "
                       "split at snake_case and camelCase and kept whole; a definition's name weighs more); "
                       "hybrid (default): the best candidates of both, fused by the server's RAG_HYBRID_FUSION: "
                       "`weighted` (default) ranks by 0.6 x z-score of the cosine + 0.4 x z-score of BM25, each "
                       "standardised over its own candidates (RAG_HYBRID_DENSE_WEIGHT sets the 0.6); `rrf` by "
                       "reciprocal rank fusion."})
    filters = JsonObject(load_default=dict, metadata={
        "description": "source_type, path_prefix, language, document_id, metadata {field: value}; any other "
                       "key is a metadata equality.",
        "example": {"language": "python", "path_prefix": "src/"}})
    collection = _COLLECTION_REF

    @ma.validates("query")
    def _not_blank(self, value: str, **kwargs: Any) -> None:
        if not value.strip():
            raise ma.ValidationError("Must not be blank.")


class ResultSchema(ma.Schema):
    content = ma.fields.String(required=True)
    score = ma.fields.Float(required=True, metadata={
        "description": "dense: cosine similarity; lexical: BM25; hybrid: the fused score (weighted: a sum of "
                       "z-scores, so it may be negative; rrf: the reciprocal-rank-fusion score). Compare scores "
                       "within one response only."})
    metadata = ma.fields.Dict(required=True, metadata={
        "description": "source, source_type, chunk_id, document_id, collection_id, path, language, symbol, "
                       "start_line, end_line, and the document's own metadata."})


class SearchResultSchema(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(ResultSchema), required=True)
    total = ma.fields.Integer(required=True)
    query_time = ma.fields.Float(required=True, metadata={"description": "Seconds spent on the search."})


class DocumentSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": "doc_01hx0c7k3m5r8v2w4y6z8a0b1c"})
    collection_id = ma.fields.String(required=True)
    source_type = ma.fields.String(required=True, validate=validate.OneOf(SOURCE_TYPES))
    source = ma.fields.String(required=True)
    path = ma.fields.String(required=True, allow_none=True)
    language = ma.fields.String(required=True, allow_none=True)
    chunking_strategy = ma.fields.String(required=True, allow_none=True)
    content_hash = ma.fields.String(required=True, allow_none=True)
    size_bytes = ma.fields.Integer(required=True)
    metadata = ma.fields.Dict(required=True, attribute="meta")
    status = ma.fields.String(required=True, validate=validate.OneOf(DOCUMENT_STATUSES))
    error = ma.fields.String(required=True, allow_none=True)
    failures = ma.fields.List(ma.fields.Dict(), required=True,
                              metadata={"description": "Files of this document that could not be indexed."})
    chunk_count = ma.fields.Integer(required=True)
    job_id = ma.fields.String(required=True, allow_none=True)
    indexed_at = Timestamp(required=True, allow_none=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class DocumentListArgs(PageArgs):
    collection = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=100))
    source_type = ma.fields.String(load_default=None, validate=validate.OneOf(SOURCE_TYPES))
    status = ma.fields.String(load_default=None, validate=validate.OneOf(DOCUMENT_STATUSES))
    path_prefix = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=1000))


class FailureSchema(ma.Schema):
    document_id = ma.fields.String(required=True)
    path = ma.fields.String(required=True, allow_none=True)
    error = ma.fields.String(required=True, allow_none=True)


class RagJobSchema(ma.Schema):
    id = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, metadata={"example": "rag.ingest"})
    status = ma.fields.String(required=True)
    progress = ma.fields.Float(required=True, metadata={"description": "0-100"})
    message = ma.fields.String(required=True, allow_none=True)
    collection_id = ma.fields.String(required=True, allow_none=True)
    document_ids = ma.fields.List(ma.fields.String(), required=True)
    counts = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(), required=True, metadata={
        "description": "documents, ready, failed, pending; when finished also files, chunks, embedded, reused."})
    failures = ma.fields.List(ma.fields.Nested(FailureSchema), required=True)
    error = ma.fields.String(required=True, allow_none=True)
    created_at = Timestamp(required=True)
    started_at = Timestamp(required=True, allow_none=True)
    finished_at = Timestamp(required=True, allow_none=True)
