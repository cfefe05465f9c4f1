"""The rag HTTP API on SQLite and PostgreSQL: collections, ingestion, code indexing, search, deletion, owners."""
from __future__ import annotations

import pytest

from app import retrieval
from tests.support.identity import bearer, create_key, error_of

from .conftest import finish, index, ingest, search

pytestmark = pytest.mark.db

FILES = [
    {"path": "src/auth/passwords.py", "content": (
        "import hashlib\n\n\n"
        "def hash_password(password: str, salt: bytes) -> str:\n"
        "    \"\"\"Derive a slow salted hash of a password with PBKDF2 so stolen hashes are hard to crack.\"\"\"\n"
        "    return hashlib.pbkdf2_hmac('sha256', password.encode(), salt, 600_000).hex()\n"),
     "metadata": {"team": "identity"}},
    {"path": "src/billing/invoice.py", "content": (
        "def invoice_total(lines):\n"
        "    \"\"\"Sum the price of every invoice line, quantity times unit price, plus value added tax.\"\"\"\n"
        "    subtotal = sum(line.quantity * line.unit_price for line in lines)\n"
        "    return round(subtotal * 1.2, 2)\n"),
     "metadata": {"team": "billing"}},
    {"path": "web/upload.js", "content": (
        "export async function uploadAvatar(file) {\n"
        "  // Send the user's profile picture to the storage bucket and return its public URL.\n"
        "  const response = await fetch('/api/avatar', { method: 'POST', body: file });\n"
        "  return (await response.json()).url;\n"
        "}\n")},
    {"path": "docs/deploy.md", "content": (
        "# Deployment\n\nRun the server behind a TLS proxy. Set the database URL and the Redis URL, "
        "then start gunicorn with gevent workers.\n")},
]


def paths(found):
    return [r["metadata"]["path"] for r in found["results"]]


def test_collections_a_default_one_and_crud(rag_app, client, alice):
    auth = bearer(alice)
    assert client.get("/v1/rag/collections", headers=auth).get_json()["data"] == []
    created = client.post("/v1/rag/collections", json={"name": "handbook", "description": "HR"}, headers=auth)
    assert created.status_code == 201
    data = created.get_json()["data"]
    assert (data["name"], data["embedder"], data["dimension"], data["chunks"]) == ("handbook", "minilm", 384, 0)
    error_of(client.post("/v1/rag/collections", json={"name": "handbook"}, headers=auth), 409, "COLLECTION_EXISTS")
    job = ingest(rag_app, client, alice, source_type="text", source="Annual leave is 25 days per year.")
    listed = {c["name"]: c for c in client.get("/v1/rag/collections", headers=auth).get_json()["data"]}
    assert set(listed) == {"handbook", "default"} and listed["default"]["id"] == job["collection_id"]
    assert listed["default"]["chunks"] == 1 and listed["default"]["documents"] == 1
    assert client.get("/v1/rag/collections/default", headers=auth).get_json()["data"]["id"] == job["collection_id"]
    assert client.delete(f"/v1/rag/collections/{data['id']}", headers=auth).status_code == 204
    error_of(client.get(f"/v1/rag/collections/{data['id']}", headers=auth), 404, "NOT_FOUND")


def test_ingested_text_is_found_by_every_mode_with_scores_and_query_time(rag_app, client, alice):
    for text in ("Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
                 "The French Revolution began in 1789 with the storming of the Bastille in Paris.",
                 "A binary search halves the sorted range at every step, finding an item in log n time."):
        ingest(rag_app, client, alice, source_type="text", source=text, metadata={"kind": "fact"})
    for mode in ("hybrid", "dense", "lexical"):
        found = search(client, alice, "how do plants make sugar from sunlight", mode=mode, limit=2)
        assert found["results"][0]["content"].startswith("Photosynthesis"), (mode, found)
        assert found["total"] == len(found["results"]) and 0 <= found["query_time"] < 30
        assert all(isinstance(r["score"], float) for r in found["results"])
        meta = found["results"][0]["metadata"]
        assert meta["kind"] == "fact" and meta["source_type"] == "text" and meta["chunk_id"].startswith("chk_")
        assert meta["document_id"].startswith("doc_") and meta["start_line"] == 1
    dense = search(client, alice, "storming of the Bastille", mode="dense", limit=3)["results"]
    assert dense[0]["score"] > dense[-1]["score"]  # cosine similarities, best first
    query = client.post("/v1/rag/query", json={"query": "searching a sorted array quickly", "limit": 1},
                        headers=bearer(alice))
    assert query.status_code == 200 and "binary search" in query.get_json()["data"]["results"][0]["content"]


def test_code_indexing_filters_by_language_path_source_type_and_metadata(rag_app, client, alice):
    data = index(rag_app, client, alice, FILES)
    assert len(data["document_ids"]) == 4 and data["job"]["counts"]["ready"] == 4
    found = search(client, alice, "hash a password securely", limit=1)
    top = found["results"][0]["metadata"]
    assert top["path"] == "src/auth/passwords.py" and top["symbol"] == "hash_password"
    assert top["language"] == "python" and top["source_type"] == "code" and top["team"] == "identity"
    assert top["start_line"] >= 1 and top["end_line"] >= top["start_line"]
    assert set(paths(search(client, alice, "upload a file", filters={"language": "javascript"}))) == {"web/upload.js"}
    assert set(paths(search(client, alice, "total", filters={"path_prefix": "src/billing/"}))) == {
        "src/billing/invoice.py"}
    assert set(paths(search(client, alice, "function", filters={"metadata": {"team": "identity"}}))) == {
        "src/auth/passwords.py"}
    assert set(paths(search(client, alice, "function", filters={"team": "billing"}))) == {"src/billing/invoice.py"}
    assert search(client, alice, "deploy", filters={"source_type": "text"})["results"] == []
    assert paths(search(client, alice, "gunicorn gevent workers", mode="lexical", limit=1)) == ["docs/deploy.md"]


def test_hybrid_search_finds_a_function_by_the_words_of_its_name(rag_app, client, alice):
    files = [
        {"path": "src/config.py", "content": (
            "import yaml\n\n\ndef parse_config_file(path):\n    with open(path) as handle:\n"
            "        return yaml.safe_load(handle)\n")},
        {"path": "src/cli.py", "content": (
            "import argparse\n\n\ndef parse_arguments(argv):\n    parser = argparse.ArgumentParser()\n"
            "    parser.add_argument('--config', help='a settings file')\n    return parser.parse_args(argv)\n")},
        {"path": "src/files.py", "content": (
            "def read_file(path):\n    # the whole file, to parse later\n    with open(path) as handle:\n"
            "        return handle.read()\n")}]
    index(rag_app, client, alice, files)
    for mode in ("hybrid", "lexical"):
        found = search(client, alice, "parse config file", mode=mode, limit=3)
        assert paths(found)[0] == "src/config.py", (mode, found)


def test_reindexing_skips_unchanged_files_and_embeds_only_new_text(rag_app, client, alice):
    first = index(rag_app, client, alice, FILES)
    again = index(rag_app, client, alice, FILES)
    assert again["job_id"] is None and sorted(again["unchanged"]) == sorted(first["document_ids"])
    changed = [dict(f) for f in FILES]
    changed[1]["content"] = FILES[1]["content"] + (
        "\n\ndef refund(invoice):\n    \"\"\"Give the customer their money back for a cancelled order.\"\"\"\n"
        "    return -invoice_total(invoice.lines)\n")
    update = index(rag_app, client, alice, changed)
    assert len(update["document_ids"]) == 1 and len(update["unchanged"]) == 3
    counts = update["job"]["counts"]
    assert counts["chunks"] >= 1 and counts["embedded"] <= counts["chunks"]
    top = search(client, alice, "money back for a cancelled order", limit=1)["results"][0]
    assert "def refund" in top["content"] and top["metadata"]["path"] == "src/billing/invoice.py"
    collection = client.get("/v1/rag/collections/default", headers=bearer(alice)).get_json()["data"]
    assert collection["documents"] == 4
    # The document keeps one set of chunks: the old ones were replaced, not duplicated.
    hits = search(client, alice, "invoice line quantity unit price", limit=10, filters={"path_prefix": "src/billing"})
    assert len({r["metadata"]["chunk_id"] for r in hits["results"]}) == len(hits["results"])
    assert sum("def invoice_total" in r["content"] for r in hits["results"]) == 1


def test_deleting_a_document_removes_it_from_both_indexes(rag_app, client, alice):
    data = index(rag_app, client, alice, FILES)
    target = next(d for d in client.get("/v1/rag/documents", headers=bearer(alice)).get_json()["data"]
                  if d["path"] == "src/billing/invoice.py")
    assert target["status"] == "ready" and target["chunk_count"] >= 1 and target["id"] in data["document_ids"]
    assert "src/billing/invoice.py" in paths(search(client, alice, "invoice total", mode="lexical"))
    assert client.delete(f"/v1/rag/documents/{target['id']}", headers=bearer(alice)).status_code == 204
    for mode in ("lexical", "dense", "hybrid"):
        assert "src/billing/invoice.py" not in paths(search(client, alice, "invoice total", mode=mode, limit=10))
    error_of(client.get(f"/v1/rag/documents/{target['id']}", headers=bearer(alice)), 404, "NOT_FOUND")
    from plugins.rag import indexing
    from plugins.rag.models import RagCollection
    from app.extensions import db

    with rag_app.app_context():
        collection = db.session.get(RagCollection, data["collection_id"])
        snapshot = indexing.snapshot_of(collection)
        assert len(snapshot.vectors) == len(snapshot.lexical) == 3  # one chunk per remaining small file
    assert client.get("/v1/rag/collections/default", headers=bearer(alice)).get_json()["data"]["documents"] == 3


def test_users_never_see_each_others_content(rag_app, client, alice, bob):
    data = ingest(rag_app, client, alice, source_type="text", source="The vault combination is kept in room 42.")
    assert search(client, bob, "vault combination room")["results"] == []
    for path in (f"/v1/rag/documents/{data['document_id']}", f"/v1/rag/collections/{data['collection_id']}",
                 f"/v1/rag/jobs/{data['job_id']}"):
        error_of(client.get(path, headers=bearer(bob)), 404, "NOT_FOUND")
    error_of(client.delete(f"/v1/rag/documents/{data['document_id']}", headers=bearer(bob)), 404, "NOT_FOUND")
    error_of(client.post("/v1/rag/search", json={"query": "vault", "collection": data["collection_id"]},
                         headers=bearer(bob)), 404, "NOT_FOUND")
    assert client.get("/v1/rag/documents", headers=bearer(bob)).get_json()["data"] == []
    with rag_app.test_request_context():
        assert retrieval.search(bob["user"]["id"], "vault combination") == []
        assert retrieval.search(alice["user"]["id"], "vault combination")[0]["document_id"] == data["document_id"]
    assert search(client, alice, "vault combination room")["results"]


def test_the_retriever_serves_agent_flows(rag_app, client, alice):
    index(rag_app, client, alice, FILES)
    with rag_app.test_request_context():
        assert retrieval.available()
        hits = retrieval.search(alice["user"]["id"], "password hashing", top_k=2, language="python")
    assert 1 <= len(hits) <= 2
    first = hits[0]
    assert first["path"] == "src/auth/passwords.py" and first["document_id"].startswith("doc_")
    assert first["content"] and isinstance(first["score"], float) and first["metadata"]["symbol"] == "hash_password"


def test_bad_requests_get_clear_errors(rag_app, client, alice):
    auth = bearer(alice)
    for body, field in (({"query": "x", "mode": "fuzzy"}, "mode"), ({"query": "x", "limit": 0}, "limit"),
                        ({"query": "   "}, "query"), ({"query": "x", "limit": 101}, "limit"),
                        ({"query": "x", "filters": {"language": 3}}, "filters.language"),
                        ({"query": "x", "filters": {"metadata": {"a": [1]}}}, "filters.metadata.a")):
        error = error_of(client.post("/v1/rag/search", json=body, headers=auth), 422, "VALIDATION_ERROR")
        assert field in error["details"]["fields"], error
    error = error_of(client.post("/v1/rag/ingest", json={"source_type": "text", "source": "x",
                                                          "chunking_strategy": "clever"}, headers=auth), 422)
    assert "chunking_strategy" in error["details"]["fields"]
    error_of(client.post("/v1/rag/ingest", json={"source_type": "ftp", "source": "x"}, headers=auth), 422)
    error_of(client.post("/v1/rag/ingest", json={"source_type": "text", "source": " "}, headers=auth), 422)
    error_of(client.post("/v1/rag/index", json={"files": [{"path": "a.py", "content": "x"},
                                                          {"path": "a.py", "content": "y"}]}, headers=auth), 422)
    error_of(client.post("/v1/rag/index", json={"files": []}, headers=auth), 422)
    blocked = error_of(client.post("/v1/rag/ingest", json={"source_type": "url", "source": "http://localhost:6379/"},
                                   headers=auth), 400, "SSRF_BLOCKED")
    assert blocked["details"]["reason"] == "loopback"
    error_of(client.post("/v1/rag/ingest", json={"source_type": "url", "source": "file:///etc/passwd"},
                         headers=auth), 400, "SSRF_BLOCKED")
    error_of(client.post("/v1/rag/ingest", json={"source_type": "github", "source": "not a repo"},
                         headers=auth), 422)
    binary = client.post("/v1/rag/ingest", data={"source_type": "file", "file": (_png(), "logo.png")},
                         headers=auth, content_type="multipart/form-data")
    error_of(binary, 415, "UNSUPPORTED_MEDIA_TYPE")
    error_of(client.post("/v1/rag/search", json={"query": "x"}), 401)
    reader = create_key(client, alice, scopes=["rag:read"])["key"]
    forbidden = error_of(client.post("/v1/rag/ingest", json={"source_type": "text", "source": "x"},
                                     headers=bearer(reader)), 403, "INSUFFICIENT_SCOPE")
    assert forbidden["details"]["required_scope"] == "rag:write"
    assert client.post("/v1/rag/search", json={"query": "x"}, headers=bearer(reader)).status_code == 200


def test_files_over_the_size_limit_are_refused(make_app, minilm, tmp_path):
    from tests.support.identity import signup

    app = make_app(RAG_MAX_FILE_BYTES=1000, RAG_INDEX_DIR=str(tmp_path))
    client = app.test_client()
    session = signup(client, "carol@example.com")
    big = "x = 1\n" * 400
    error = error_of(client.post("/v1/rag/index", json={"files": [{"path": "big.py", "content": big}]},
                                 headers=bearer(session)), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["max_bytes"] == 1000
    error_of(client.post("/v1/rag/ingest", data={"source_type": "file", "file": (_bytes(big), "big.py")},
                         headers=bearer(session), content_type="multipart/form-data"), 413, "PAYLOAD_TOO_LARGE")


def _bytes(text: str):
    import io

    return io.BytesIO(text.encode())


def _png():
    import io

    return io.BytesIO(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00")


def _pdf(text: str) -> bytes:
    """A minimal, valid one-page PDF with `text` in Helvetica."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_files_upload_as_multipart_or_json_including_pdf(rag_app, client, alice):
    import base64
    import io

    auth = bearer(alice)
    notes = b"Meeting notes: the launch moves to March because the payment provider needs another audit."
    response = client.post("/v1/rag/ingest", data={"source_type": "file", "metadata": '{"project": "apollo"}',
                                                   "file": (io.BytesIO(notes), "notes.txt")},
                           headers=auth, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_data(as_text=True)
    assert finish(rag_app, client, alice, response.get_json()["data"]["job_id"])["status"] == "succeeded"
    pdf = client.post("/v1/rag/ingest", data={"source_type": "file",
                                              "file": (io.BytesIO(_pdf("Quarterly revenue grew by twelve percent")),
                                                       "report.pdf")},
                      headers=auth, content_type="multipart/form-data")
    assert pdf.status_code == 202, pdf.get_data(as_text=True)
    finish(rag_app, client, alice, pdf.get_json()["data"]["job_id"])
    as_json = ingest(rag_app, client, alice, source_type="file", path="spec.pdf",
                     content_base64=base64.b64encode(_pdf("The API answers in under fifty milliseconds")).decode())
    document = client.get(f"/v1/rag/documents/{as_json['document_id']}", headers=auth).get_json()["data"]
    assert (document["language"], document["source"], document["status"]) == ("pdf", "spec.pdf", "ready")
    assert search(client, alice, "when is the launch", limit=1)["results"][0]["metadata"]["project"] == "apollo"
    assert paths(search(client, alice, "revenue growth this quarter", limit=1)) == ["report.pdf"]
    assert paths(search(client, alice, "API latency", limit=1)) == ["spec.pdf"]
