"""`flask rag index | reindex | stats` on a real directory tree."""
from __future__ import annotations

import pytest

from tests.support.identity import signup

from .conftest import search

pytestmark = pytest.mark.db


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "cache.py").write_text(
        "def evict_oldest(cache):\n    \"\"\"Drop the least recently used entry when the cache is full.\"\"\"\n"
        "    key = next(iter(cache))\n    del cache[key]\n")
    (root / "src" / "mail.ts").write_text(
        "export function sendWelcomeEmail(user: string): void {\n  // greet a new customer by email\n"
        "  console.log(`welcome ${user}`);\n}\n")
    (root / "README.md").write_text("# Project\n\nA tiny project that caches things and sends welcome emails.\n")
    (root / ".gitignore").write_text("secrets/\n*.log\n")
    (root / "secrets").mkdir()
    (root / "secrets" / "keys.py").write_text("API_KEY = 'do not index me'\n")
    (root / "debug.log").write_text("a log line that must not be indexed\n")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (root / "dump.sql").write_text("INSERT INTO t VALUES (1);\n" * 2000)
    (root / "node_modules" / "left-pad").mkdir(parents=True)
    (root / "node_modules" / "left-pad" / "index.js").write_text("module.exports = leftPad;\n")
    return root


def test_index_skips_ignored_binary_and_huge_files_then_only_changes(make_app, minilm, tmp_path, tree):
    app = make_app(RAG_INDEX_DIR=str(tmp_path / "idx"), RAG_MAX_FILE_BYTES=20_000)
    client = app.test_client()
    alice = signup(client, "alice@example.com")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["rag", "index", str(tree), "--user", "alice@example.com", "--collection", "proj"])
    assert result.exit_code == 0, result.output
    assert "3 files: 3 new or changed, 0 unchanged" in result.output
    assert "1 binary" in result.output and "1 too large" in result.output
    assert "indexed into proj" in result.output
    paths = {r["metadata"]["path"] for r in search(client, alice, "project", collection="proj", limit=10)["results"]}
    assert paths == {"src/cache.py", "src/mail.ts", "README.md"}
    assert search(client, alice, "do not index me", mode="lexical", collection="proj")["results"] == []

    again = runner.invoke(args=["rag", "index", str(tree), "--user", "alice@example.com", "--collection", "proj"])
    assert "3 files: 0 new or changed, 3 unchanged" in again.output and "indexing" not in again.output
    (tree / "src" / "cache.py").write_text("def evict_all(cache):\n    \"\"\"Empty the whole cache.\"\"\"\n"
                                           "    cache.clear()\n")
    (tree / "README.md").unlink()
    changed = runner.invoke(args=["rag", "index", str(tree), "--user", "alice@example.com", "--collection", "proj",
                                  "--glob", "*.py", "--glob", "*.md", "--prune"])
    assert changed.exit_code == 0, changed.output
    assert "1 files: 1 new or changed, 0 unchanged" in changed.output
    assert "removed 1 documents" in changed.output
    top = search(client, alice, "clear everything in the cache", collection="proj", limit=1)["results"][0]
    assert top["metadata"]["symbol"] == "evict_all"
    missing = runner.invoke(args=["rag", "index", str(tree), "--user", "nobody@example.com"])
    assert missing.exit_code != 0 and "no user" in missing.output


def test_reindex_rebuilds_from_the_database_and_stats_lists_collections(make_app, minilm, tmp_path, tree):
    app = make_app(RAG_INDEX_DIR=str(tmp_path / "idx"))
    client = app.test_client()
    alice = signup(client, "alice@example.com")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["rag", "index", str(tree / "src"), "--user", "alice@example.com"]).exit_code == 0
    before = client.get("/v1/rag/collections/default", headers={"Authorization": f"Bearer {alice['access_token']}"})
    rebuilt = runner.invoke(args=["rag", "reindex", "--user", "alice@example.com"])
    assert rebuilt.exit_code == 0 and "index version" in rebuilt.output
    after = client.get("/v1/rag/collections/default", headers={"Authorization": f"Bearer {alice['access_token']}"})
    assert after.get_json()["data"]["index_version"] > before.get_json()["data"]["index_version"]
    assert search(client, alice, "least recently used", limit=1)["results"][0]["metadata"]["path"] == "cache.py"
    rechunked = runner.invoke(args=["rag", "reindex", "--user", "alice@example.com", "--rechunk"])
    assert rechunked.exit_code == 0 and "0 embedded" in rechunked.output, rechunked.output
    stats = runner.invoke(args=["rag", "stats"])
    assert stats.exit_code == 0 and "default" in stats.output and "total: 1 collections, 2 documents" in stats.output
    as_json = runner.invoke(args=["rag", "stats", "--json"])
    assert '"chunks": 2' in as_json.output
