"""Under gevent workers, a search's CPU work (query embedding, FAISS, BM25) runs in a real thread:
the worker keeps answering other requests (`/health` here) while searches are being computed.

The first search of the process also loads the model, which must happen on the serving thread
(`embedders.prepare`): loaded in a pool thread, transformers' own loader threads never ran and
the search hung.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import base_config
from tests.support.servers import ROOT

from .conftest import index

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import json, sys, time
    import gevent
    import app.concurrency
    from app import create_app

    config, token, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    if mode == "inline":  # the control: the same searches computed on the worker's own loop
        app.concurrency._gevent_patched = lambda: False
    server = create_app(config)
    client = server.test_client()
    auth = {"Authorization": "Bearer " + token}
    body = {"query": "parse the configuration file", "mode": "hybrid", "limit": 5}
    assert client.post("/v1/rag/search", json=body, headers=auth).status_code == 200  # loads model and index
    span, health = [], []

    def searches():
        span.append(time.monotonic())
        statuses = {client.post("/v1/rag/search", json=body, headers=auth).status_code for _ in range(20)}
        span.append(time.monotonic())
        return statuses

    def probes():
        while len(span) < 2:
            status = client.get("/health").status_code
            health.append((time.monotonic(), status))
            gevent.sleep(0.002)  # a timer: sleep(0) would never let the loop see the search finish

    searcher, prober = gevent.spawn(searches), gevent.spawn(probes)
    gevent.joinall([searcher, prober], timeout=240, raise_error=True)
    start, end = span
    print(json.dumps({"search_statuses": sorted(searcher.value),
                      "health_during_searches": [s for t, s in health if start < t < end]}))
""")


def run(config: dict, token: str, mode: str, instance: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(config), token, mode], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/tmp",
                              "LUNAOS_INSTANCE_PATH": str(instance)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_health_answers_while_searches_compute(rag_app, client, alice, schema, worker,
                                               tmp_path):
    files = [{"path": f"pkg/module_{n}.py", "content": (
        f"def load_settings_{n}(path):\n"
        f"    \"\"\"Read the configuration file number {n} and return its sections.\"\"\"\n"
        f"    with open(path) as handle:\n        return [line.split('=') for line in handle if '=' in line]\n\n\n"
        f"class Cache{n}:\n    \"\"\"Keep the {n} most recent answers in memory.\"\"\"\n\n"
        f"    def __init__(self):\n        self.items = {{}}\n")} for n in range(40)]
    index(rag_app, client, alice, files)
    config = {**base_config(schema, worker), "RAG_INDEX_DIR": rag_app.config["RAG_INDEX_DIR"]}
    offloaded = run(config, alice["access_token"], "threadpool", tmp_path)
    inline = run(config, alice["access_token"], "inline", tmp_path)
    assert offloaded["search_statuses"] == inline["search_statuses"] == [200]
    # Offloaded: /health is served between the steps of every search.
    assert len(offloaded["health_during_searches"]) >= 10 and set(offloaded["health_during_searches"]) == {200}
    # The control shows what that rules out: computed on the loop, nothing else is served meanwhile.
    assert len(inline["health_during_searches"]) <= 1
