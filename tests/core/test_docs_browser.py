"""`/docs` renders every operation in a real headless Chromium, offline, under the app's own CSP.

The app is served on a local port; Chromium may resolve no host but the docs
host itself, so a page that needed a CDN (or phoned the Swagger validator)
would fail to render here. CI installs chromium: a missing browser fails the
test instead of skipping it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from tests.support.live_server import live_server

pytestmark = pytest.mark.slow

DOCS_HOST = "docs.lunaos.test"  # not "localhost": Swagger UI skips some network calls for local hosts


def chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = candidate and shutil.which(candidate)
        if path:
            return path
    pytest.fail("headless Chromium is required for the /docs check: apt-get install chromium (or set CHROMIUM)")


def render(url: str, profile_dir) -> subprocess.CompletedProcess:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--no-default-browser-check", f"--user-data-dir={profile_dir}",
        # Only the docs host resolves: any CDN, font or validator request fails.
        f"--host-resolver-rules=MAP {DOCS_HOST} 127.0.0.1, MAP * ~NOTFOUND",
        "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=20000", "--dump-dom", url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href", "action") and value]


@pytest.fixture
def served(make_app):
    app = make_app(RATELIMIT_ANONYMOUS="10000/minute")
    with live_server(app, host="127.0.0.1") as base_url:
        yield app, base_url.replace("127.0.0.1", DOCS_HOST)


def test_swagger_ui_renders_every_operation_offline(served, tmp_path):
    app, base_url = served
    spec = app.test_client().get("/openapi.json").get_json()
    expected = {path: len([m for m in ops if m in ("get", "post", "put", "patch", "delete")])
                for path, ops in spec["paths"].items()}

    result = render(f"{base_url}/docs", tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-3000:]
    dom = result.stdout

    assert "Unable to render this definition" not in dom, "this Swagger UI cannot read the spec's OpenAPI version"
    assert "Failed to load API definition" not in dom
    rendered = re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom)
    assert {"/", "/health", "/v1/plugins"} <= set(rendered), rendered[:20]
    counts = {path: rendered.count(path) for path in set(rendered)}
    assert counts == expected  # every operation of the live spec, once
    # The page pulled nothing from elsewhere: no CSP violation, no validator badge.
    violations = [line for line in result.stderr.splitlines() if "Content Security Policy" in line]
    assert violations == []
    assert "validator.swagger.io" not in dom


def test_docs_page_references_no_external_url(client):
    response = client.get("/docs")
    assert response.status_code == 200
    parser = _Links()
    parser.feed(response.get_data(as_text=True))
    assert parser.urls, "the docs page loads its assets from somewhere"
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert client.get(url).status_code == 200, url  # and every asset is served locally
    init = client.get("/docs/init.js").get_data(as_text=True)
    assert not re.search(r"https?://|//[a-z]", init)
    assert '"/openapi.json"' in init
