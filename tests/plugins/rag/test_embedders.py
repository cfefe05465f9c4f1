"""The embedder registry: MiniLM offline, an OpenAI-compatible endpoint (a local server speaking its wire
format), embedders added in code, and a clear error for unknown names."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from app.plugins import PluginError
from plugins.rag import embedders


def test_minilm_is_local_normalised_and_counts_its_own_tokens(minilm):
    vectors = minilm.encode(["a cat sat on the mat", "a kitten rested on the rug", "stock market crash"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert minilm.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    assert embedders.get("minilm", {}) is minilm  # one instance per process


class EmbeddingsServer:
    """`POST /v1/embeddings` as OpenAI answers it: deterministic vectors from the text's bytes."""

    def __init__(self, dimension: int = 8):
        self.calls: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.calls.append({"body": body, "auth": self.headers.get("Authorization")})
                data = [{"object": "embedding", "index": i,
                         "embedding": [float((sum(text.encode()) * (j + 1)) % 97) for j in range(dimension)]}
                        for i, text in enumerate(body["input"])]
                payload = json.dumps({"object": "list", "data": list(reversed(data)), "model": body["model"],
                                      "usage": {"prompt_tokens": 3, "total_tokens": 3}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_openai_compatible_endpoint_embeds_in_order_and_normalised():
    server = EmbeddingsServer()
    try:
        embedder = embedders.OpenAIEmbedder({"RAG_OPENAI_EMBED_BASE_URL": server.url,
                                             "RAG_OPENAI_EMBED_API_KEY": "sk-x",
                                             "RAG_OPENAI_EMBED_MODEL": "text-embedding-3-small",
                                             "RAG_OPENAI_EMBED_DIMENSION": 8, "RAG_EMBED_BATCH_SIZE": 1})
        vectors = embedder.encode(["alpha", "beta", "gamma", "delta", "epsilon"])
        assert vectors.shape == (5, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        again = embedder.encode(["gamma"])
        assert np.allclose(vectors[2], again[0])  # the answer's order was restored by index
        assert server.calls[0]["auth"] == "Bearer sk-x" and len(server.calls) == 3  # batches of 4
        wrong = embedders.OpenAIEmbedder({"RAG_OPENAI_EMBED_BASE_URL": server.url, "RAG_OPENAI_EMBED_DIMENSION": 16})
        with pytest.raises(embedders.EmbedderError, match="16"):
            wrong.encode(["x"])
    finally:
        server.close()


class Letters:
    """A toy third-party embedder: letter frequencies."""

    name, dimension, max_tokens = "letters", 26, 512

    def __init__(self, config):
        self.config = config

    def encode(self, texts):
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for row, text in enumerate(texts):
            for char in text.lower():
                if "a" <= char <= "z":
                    out[row, ord(char) - 97] += 1
        return embedders.normalise(out)

    def count_tokens(self, text):
        return len(text.split()) + 2


def test_a_registered_embedder_indexes_and_searches_a_collection(make_app, minilm, tmp_path):
    from tests.support.identity import signup

    from .conftest import ingest, search

    embedders.register("letters", Letters)
    app = make_app(RAG_EMBEDDER="letters", RAG_INDEX_DIR=str(tmp_path))
    client = app.test_client()
    alice = signup(client, "alice@example.com")
    ingest(app, client, alice, source_type="text", source="zzz zebra zone", collection="toy")
    ingest(app, client, alice, source_type="text", source="aaa banana", collection="toy")
    collection = client.get("/v1/rag/collections/toy",
                            headers={"Authorization": f"Bearer {alice['access_token']}"}).get_json()["data"]
    assert (collection["embedder"], collection["dimension"]) == ("letters", 26)
    top = search(client, alice, "zz", mode="dense", collection="toy", limit=1)["results"][0]
    assert top["content"] == "zzz zebra zone"


def test_an_unknown_embedder_stops_start_up(make_app):
    with pytest.raises(PluginError, match="LUNAOS_RAG_EMBEDDER: unknown embedder 'does-not-exist'"):
        make_app(RAG_EMBEDDER="does-not-exist")
