"""The OpenAI-compatible routes' wire format, byte by byte, against a real model server: completion objects,
chunk order, `stream_options.include_usage`, `data: [DONE]`, in-band errors, model lists."""
from __future__ import annotations

import json
import time

import pytest

from tests.plugins.ai.conftest import kill, openai_error_of, with_model
from tests.support.identity import bearer

pytestmark = pytest.mark.xdist_group("llm")

HELLO = [{"role": "user", "content": "Say hello."}]
LONG = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
CHUNK_FIELDS = {"id", "object", "created", "model", "system_fingerprint", "choices"}


@pytest.fixture
def app(make_app, llm_upstream):
    return make_app(**with_model(llm_upstream))


def completions(client, key, **body):
    body = {"model": "smollm2", "messages": HELLO, "temperature": 0, "max_tokens": 8, **body}
    return client.post("/v1/chat/completions", json=body, headers=bearer(key), buffered=not body.get("stream"))


def data_lines(response):
    """The `data:` payloads of a streamed answer, in order (JSON decoded, `[DONE]` as is); closes it."""
    try:
        raw = b"".join(response.response).decode()
    finally:
        response.close()
    assert raw.endswith("\n\n")
    frames = raw[:-2].split("\n\n")
    out = []
    for frame in frames:
        assert frame.startswith("data: ") and "\n" not in frame, frame  # one data line per event, no event names
        payload = frame[len("data: "):]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_completion_object(client, ai_key, llm_upstream):
    before = int(time.time())
    response = completions(client, ai_key)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > 20
    assert body["object"] == "chat.completion"
    assert before <= body["created"] <= int(time.time()) + 1
    assert body["model"] == "smollm2"
    (choice,) = body["choices"]
    assert choice == {"index": 0, "message": {"role": "assistant", "content": choice["message"]["content"],
                                              "refusal": None},
                      "logprobs": None, "finish_reason": choice["finish_reason"]}
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 8
    assert response.headers["X-LLM-Provider"] == llm_upstream.name
    assert "outcome=ok" in response.headers["X-LLM-Attempts"]
    assert response.headers["X-Request-ID"]
    assert completions(client, ai_key).get_json()["id"] != body["id"]


def test_max_completion_tokens_wins_over_max_tokens(client, ai_key):
    body = completions(client, ai_key, messages=LONG, max_tokens=50, max_completion_tokens=3).get_json()
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"


def test_stream_chunks_in_openai_order(client, ai_key, llm_upstream):
    response = completions(client, ai_key, stream=True, max_tokens=12)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-LLM-Provider"] == llm_upstream.name
    lines = data_lines(response)
    assert lines[-1] == "[DONE]"
    chunks = lines[:-1]
    for chunk in chunks:
        assert set(chunk) == CHUNK_FIELDS, chunk  # no `usage` key unless asked for
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == chunks[0]["id"] and chunk["id"].startswith("chatcmpl-")
        assert chunk["created"] == chunks[0]["created"]
        assert chunk["model"] == "smollm2"
        (choice,) = chunk["choices"]
        assert choice["index"] == 0 and choice["logprobs"] is None
    first, *middle, last = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["choices"][0]["finish_reason"] is None
    assert middle and all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    assert last["choices"][0]["delta"] == {}
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle).strip()
    plain = completions(client, ai_key, max_tokens=12).get_json()
    # The JSON answer comes from the same model; words are not compared, as a llama.cpp server that
    # reuses its prompt cache can answer a repeat differently even at temperature 0.
    assert plain["model"] == "smollm2" and plain["choices"][0]["message"]["content"].strip()


def test_stream_with_include_usage(client, ai_key):
    response = completions(client, ai_key, stream=True, stream_options={"include_usage": True})
    lines = data_lines(response)
    assert lines[-1] == "[DONE]"
    *chunks, usage_chunk = lines[:-1]
    assert all(c["usage"] is None for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage_chunk["choices"] == []
    assert usage_chunk["id"] == chunks[0]["id"]
    usage = usage_chunk["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 8 and usage["prompt_tokens"] > 0
    # The booked usage is the reported one.
    rows = client.get("/v1/ai/usage", headers=bearer(ai_key)).get_json()["data"]
    assert [(r["prompt_tokens"], r["completion_tokens"], r["requests"]) for r in rows] == \
        [(usage["prompt_tokens"], usage["completion_tokens"], 1)]


def test_unknown_model_is_404_model_not_found(client, ai_key):
    for stream in (False, True):
        response = completions(client, ai_key, model="gpt-17", stream=stream)
        error = openai_error_of(response, 404, code="model_not_found", param="model")
        assert error["type"] == "invalid_request_error"
        assert "gpt-17" in error["message"]


def test_models(client, ai_key, llm_upstream):
    response = client.get("/v1/models", headers=bearer(ai_key))
    assert response.status_code == 200
    assert response.get_json() == {"object": "list", "data": [
        {"id": "smollm2", "object": "model", "created": 0, "owned_by": llm_upstream.name}]}
    one = client.get("/v1/models/smollm2", headers=bearer(ai_key))
    assert one.get_json() == {"id": "smollm2", "object": "model", "created": 0, "owned_by": llm_upstream.name}
    openai_error_of(client.get("/v1/models/gpt-17", headers=bearer(ai_key)), 404, code="model_not_found")


def test_provider_dying_mid_stream_sends_an_in_band_error(client, ai_key, llm_upstream):
    response = completions(client, ai_key, messages=LONG, stream=True, max_tokens=400)
    assert response.status_code == 200
    body = iter(response.response)
    received = next(body) + next(body)  # the role chunk and the first text
    try:
        kill(llm_upstream)
        for piece in body:
            received += piece
        response.close()
    finally:
        llm_upstream.start()
    frames = received.decode()[:-2].split("\n\n")
    last = json.loads(frames[-1][len("data: "):])
    assert set(last) == {"error"}
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["type"] == "server_error"
    assert "[DONE]" not in received.decode()  # a cut-off answer must not look finished
    assert all(json.loads(f[len("data: "):]).get("object") == "chat.completion.chunk" for f in frames[:-1])
    rows = client.get("/v1/ai/usage", headers=bearer(ai_key)).get_json()["data"]
    assert sum(r["requests"] for r in rows) == 1 and sum(r["completion_tokens"] for r in rows) >= 1
