"""Serve a WSGI app on a free local port from a thread, for tests that need a real HTTP client (a browser).

    with live_server(app) as base_url:
        urllib.request.urlopen(base_url + "/health")

werkzeug's threaded server is enough here: these tests check what a client sees,
not how the production server (gunicorn) behaves.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from werkzeug.serving import make_server


@contextlib.contextmanager
def live_server(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    server = make_server(host, 0, app, threaded=True)  # port 0: the OS picks a free one
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
