"""Accounts and keys for the ai plugin's tests, and apps with and without a model provider."""
from __future__ import annotations

import pytest

from tests.support.identity import create_key, signup

# No provider at all: neither configured nor the offline built-in.
NO_PROVIDER = {"LLM_PROVIDERS": [], "LLM_OFFLINE": False}


@pytest.fixture
def app(make_app):
    return make_app(**NO_PROVIDER)


@pytest.fixture
def owner(client):
    return signup(client, "ada@example.com")


@pytest.fixture
def ai_key(client, owner):
    """An API key of `owner` with the ai:use scope: its secret."""
    return create_key(client, owner, name="gateway", scopes=["ai:use"])["key"]


def openai_error_of(response, status, code=None, param=None):
    """Assert an OpenAI-shaped error body with this status (and code/param); return `error`."""
    body = response.get_json(silent=True)
    text = response.get_data(as_text=True)
    assert response.status_code == status, f"{response.status_code} {text}"
    assert isinstance(body, dict) and set(body) == {"error"}, text
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, text
    assert isinstance(error["message"], str) and error["message"], text
    assert "Traceback" not in text
    if code is not None:
        assert error["code"] == code, text
    if param is not None:
        assert error["param"] == param, text
    return error


def with_model(upstream, **overrides):
    """App settings with `upstream` as the only provider; usage is written at once (not batched)."""
    from tests.support.llm_server import llm_providers

    return {"LLM_PROVIDERS": llm_providers(upstream), "LLM_OFFLINE": False, "LLM_USAGE_FLUSH_SECONDS": 0,
            **overrides}


def kill(upstream):
    """SIGKILL the upstream server mid-answer (its connections drop, as when a host dies); `.start()`
    brings it back on the same port."""
    upstream._process.kill()
    upstream.stop()


def sse_frames(response):
    """Every frame of a streamed test-client response (opened with buffered=False), then close it."""
    from tests.support.servers import SSEReader

    reader = SSEReader(response.response)
    frames = []
    try:
        while (frame := reader.next_event()) is not None:
            frames.append(frame)
    finally:
        response.close()
    return frames
