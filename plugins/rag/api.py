"""HTTP routes of the rag plugin: collections, documents, indexing jobs and search."""
from __future__ import annotations

from typing import Any

from flask.views import MethodView
from werkzeug.datastructures import MultiDict

from app.http import Blueprint, JsonBodyParser, PageArgs
from app.security import authenticated_principal, require

from . import search as searching
from . import service
from .schemas import (CollectionCreateSchema, CollectionSchema, DocumentListArgs, DocumentSchema,
                      IndexAcceptedSchema, IndexSchema, IngestAcceptedSchema, IngestSchema, RagJobSchema,
                      SearchResultSchema, SearchSchema)


class _JsonOrMultipartParser(JsonBodyParser):
    """JSON bodies, or multipart forms whose fields and files fill the same schema (POST /rag/ingest)."""

    def load_json_or_form(self, req: Any, schema: Any) -> Any:
        if req.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            merged = MultiDict(req.form)
            for name, upload in req.files.items(multi=True):
                merged.add(name, upload)
            return self._makeproxy(merged, schema)
        return self.load_json(req, schema)


class RagBlueprint(Blueprint):
    ARGUMENTS_PARSER = _JsonOrMultipartParser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {**Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
                                             "json_or_form": "application/json"}


blp = RagBlueprint("rag", __name__, url_prefix="/v1/rag", description="Retrieval over your documents and code.")


def _owner() -> str:
    return authenticated_principal().user_id  # type: ignore[return-value]


@blp.route("/collections")
class Collections(MethodView):
    @require("rag:write")
    @blp.arguments(CollectionCreateSchema)
    @blp.response(201, CollectionSchema)
    @blp.alt_response(409, response="CONFLICT", description="You already have a collection of that name.")
    def post(self, body):
        """Create a collection"""
        collection = service.create_collection(_owner(), body["name"], body.get("description"))
        return service.collection_view(collection, {"documents": 0, "chunks": 0})

    @require("rag:read")
    @blp.arguments(PageArgs, location="query")
    @blp.paginated(CollectionSchema)
    def get(self, args):
        """Your collections with their document and chunk counts, newest first"""
        page = service.list_collections(_owner(), args["page"], args["per_page"])
        stats = service.collection_stats(c.id for c in page.items)
        page.items = [service.collection_view(c, stats[c.id]) for c in page.items]
        return page


@blp.route("/collections/<collection_id>")
class Collection(MethodView):
    @require("rag:read")
    @blp.response(200, CollectionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, collection_id):
        """One collection (by id or name)"""
        return service.collection_view(service.get_collection(_owner(), collection_id))

    @require("rag:write")
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, collection_id):
        """Delete a collection with its documents, chunks and indexes"""
        service.delete_collection(_owner(), collection_id)


@blp.route("/index")
class Index(MethodView):
    @require("rag:write")
    @blp.arguments(IndexSchema)
    @blp.response(202, IndexAcceptedSchema)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, body):
        """Index code files: new and changed ones are chunked and embedded by a job"""
        job, collection, changed, unchanged = service.index_files(_owner(), body["files"], body.get("collection"),
                                                                  body.get("chunking_strategy"))
        return {"job_id": job.id if job else None, "collection_id": collection.id, "document_ids": changed,
                "unchanged": unchanged}


@blp.route("/ingest")
class Ingest(MethodView):
    @require("rag:write")
    @blp.arguments(IngestSchema, location="json_or_form")
    @blp.doc(requestBody={"content": {"multipart/form-data": {"schema": IngestSchema}}})
    @blp.response(202, IngestAcceptedSchema)
    @blp.alt_response(400, response="BAD_REQUEST", description="SSRF_BLOCKED: the URL targets a private, "
                                                                   "loopback or link-local address.")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, body):
        """Ingest one document (text, file, url or github) in the background"""
        upload = body.pop("file", None)
        file_input = None
        if upload is not None:
            file_input = (upload.filename or body.get("path") or "upload", upload.read(), upload.mimetype)
        job, document = service.ingest(
            _owner(), source_type=body["source_type"], source=body.get("source"), metadata=body["metadata"],
            chunking_strategy=body.get("chunking_strategy"), collection=body.get("collection"),
            path=body.get("path"), content=body.get("content"), content_base64=body.get("content_base64"),
            upload=file_input)
        return {"job_id": job.id, "document_id": document.id, "collection_id": document.collection_id,
                "status": document.status}


@blp.route("/jobs/<job_id>")
class RagJob(MethodView):
    @require("rag:read")
    @blp.response(200, RagJobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, job_id):
        """An indexing job: status, progress, per-document counts and failures"""
        return service.job_view(_owner(), job_id)


def _search(body: dict[str, Any]) -> dict[str, Any]:
    return searching.search(searching.Query(owner_id=_owner(), text=body["query"], limit=body["limit"],
                                            mode=body["mode"], filters=body["filters"],
                                            collection=body.get("collection")))


@blp.route("/search")
class Search(MethodView):
    @require("rag:read")
    @blp.arguments(SearchSchema)
    @blp.response(200, SearchResultSchema)
    def post(self, body):
        """Search your indexed content (hybrid by default)"""
        return _search(body)


@blp.route("/query")
class Query(MethodView):
    @require("rag:read")
    @blp.arguments(SearchSchema)
    @blp.response(200, SearchResultSchema)
    def post(self, body):
        """Search your indexed content (the same as /rag/search)"""
        return _search(body)


@blp.route("/documents")
class Documents(MethodView):
    @require("rag:read")
    @blp.arguments(DocumentListArgs, location="query")
    @blp.paginated(DocumentSchema)
    def get(self, args):
        """Your documents, newest first"""
        return service.list_documents(_owner(), args.pop("page"), args.pop("per_page"), **args)


@blp.route("/documents/<document_id>")
class Document(MethodView):
    @require("rag:read")
    @blp.response(200, DocumentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, document_id):
        """One document and its indexing status"""
        return service.get_document(_owner(), document_id)

    @require("rag:write")
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, document_id):
        """Delete a document: its chunks leave the database and both indexes"""
        service.delete_document(_owner(), document_id)
