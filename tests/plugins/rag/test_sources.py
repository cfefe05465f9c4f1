"""url and github sources through real indexing jobs, against local HTTP servers."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.support.identity import bearer, signup

from .conftest import ingest, search
from .local_http import body, local_server, redirect

pytestmark = pytest.mark.db
ROOT = Path(__file__).resolve().parents[3]

PAGE = b"""<html><head><title>Release checklist</title><style>body{color:red}</style>
<script>var tracking = "do not index";</script></head>
<body><h1>Release checklist</h1><p>Tag the release, build the wheels, then publish the changelog.</p>
<p>Rollback: redeploy the previous tag and restore the database snapshot.</p></body></html>"""


@pytest.fixture
def servers():
    with local_server() as trusted, local_server() as internal:
        yield trusted, internal


def app_for(make_app, tmp_path, *hosts, **config):
    return make_app(RAG_INDEX_DIR=str(tmp_path / "idx"), RAG_URL_ALLOWED_HOSTS=list(hosts), **config)


def test_a_web_page_is_fetched_cleaned_and_indexed(make_app, minilm, tmp_path, servers):
    trusted, internal = servers
    trusted.routes["/docs/release"] = body(PAGE, "text/html; charset=utf-8")
    trusted.routes["/old-link"] = redirect("/docs/release", 301)
    app = app_for(make_app, tmp_path, trusted.host)
    client = app.test_client()
    alice = signup(client, "alice@example.com")
    data = ingest(app, client, alice, source_type="url", source=f"{trusted.url}/old-link", metadata={"site": "wiki"})
    document = client.get(f"/v1/rag/documents/{data['document_id']}", headers=bearer(alice)).get_json()["data"]
    assert document["metadata"]["title"] == "Release checklist" and document["metadata"]["site"] == "wiki"
    assert document["metadata"]["url"] == f"{trusted.url}/docs/release"
    top = search(client, alice, "how do I roll back a release", limit=1)["results"][0]
    assert "restore the database snapshot" in top["content"]
    assert "tracking" not in top["content"] and "color:red" not in top["content"]
    assert top["metadata"]["source_type"] == "url"


def test_a_redirect_to_an_internal_address_fails_the_job_with_ssrf_blocked(make_app, minilm, tmp_path, servers):
    trusted, internal = servers
    internal.routes["/admin"] = body(b"internal secrets")
    trusted.routes["/innocent"] = redirect(f"http://127.0.0.1:{internal.port}/admin")
    app = app_for(make_app, tmp_path, trusted.host)
    client = app.test_client()
    alice = signup(client, "alice@example.com")
    data = ingest(app, client, alice, expect="failed", source_type="url", source=f"{trusted.url}/innocent")
    assert "SSRF_BLOCKED" in data["job"]["error"]
    assert data["job"]["counts"]["failed"] == 1 and "SSRF_BLOCKED" in data["job"]["failures"][0]["error"]
    document = client.get(f"/v1/rag/documents/{data['document_id']}", headers=bearer(alice)).get_json()["data"]
    assert document["status"] == "failed" and "loopback" in document["error"]
    assert internal.requests == []


def repository_tarball() -> bytes:
    """A real tarball laid out like GitHub's (one top directory), of real source files of this project."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"acme-tools-1a2b3c/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add("plugins/rag/lexical.py", (ROOT / "plugins/rag/lexical.py").read_bytes())
        add("app/ids.py", (ROOT / "app/ids.py").read_bytes())
        add("README.md", b"# acme tools\n\nTools for the acme team: identifiers and keyword search.\n")
        add("assets/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
        add("data/huge.json", b"[" + b"1," * 40_000 + b"1]")
        link = tarfile.TarInfo("acme-tools-1a2b3c/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    return buffer.getvalue()


def test_a_github_repository_is_indexed_from_its_tarball(make_app, minilm, tmp_path, servers):
    api, internal = servers
    api.routes["/repos/acme/tools/tarball/main"] = redirect("/codeload/acme/tools/tar.gz/main")
    api.routes["/codeload/acme/tools/tar.gz/main"] = body(repository_tarball(), "application/x-gzip")
    app = app_for(make_app, tmp_path, RAG_GITHUB_API_URL=api.url, RAG_GITHUB_TOKEN="ghp_test_token_123",
                  RAG_MAX_FILE_BYTES=50_000)
    client = app.test_client()
    alice = signup(client, "alice@example.com")
    data = ingest(app, client, alice, source_type="github", source="acme/tools@main", collection="repos")
    assert api.requests[0]["headers"]["Authorization"] == "Bearer ghp_test_token_123"
    job = data["job"]
    assert job["counts"]["files"] == 3 and job["counts"]["chunks"] >= 3
    assert [f["path"] for f in job["failures"]] == ["data/huge.json"]  # too large; the png is skipped as binary
    hits = search(client, alice, "tokenize camelCase identifiers for BM25", collection="repos", limit=3)
    assert hits["results"][0]["metadata"]["path"] == "plugins/rag/lexical.py"
    assert hits["results"][0]["metadata"]["repository"] == "acme/tools"
    assert search(client, alice, "new_id prefix", filters={"path_prefix": "app/"}, mode="lexical")["results"]
    document = client.get(f"/v1/rag/documents/{data['document_id']}", headers=bearer(alice)).get_json()["data"]
    assert (document["source"], document["source_type"]) == ("acme/tools@main", "github")


def test_the_github_token_never_follows_a_redirect_to_another_host(make_app, minilm, tmp_path, servers):
    api, mirror = servers
    mirror.routes["/archive.tar.gz"] = body(repository_tarball(), "application/x-gzip")
    api.routes["/repos/acme/tools/tarball"] = redirect(f"http://127.0.0.1:{mirror.port}/archive.tar.gz")
    app = app_for(make_app, tmp_path, mirror.host, RAG_GITHUB_API_URL=api.url, RAG_GITHUB_TOKEN="ghp_secret")
    client = app.test_client()
    alice = signup(client, "alice@example.com")
    ingest(app, client, alice, source_type="github", source="https://github.com/acme/tools")
    assert api.requests[0]["headers"]["Authorization"] == "Bearer ghp_secret"
    assert "Authorization" not in mirror.requests[0]["headers"]
