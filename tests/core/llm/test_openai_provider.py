"""The `openai` provider's HTTP behaviour against a scripted OpenAI-compatible server on loopback:
what is sent, keep-alive reuse, error statuses, streams, timeouts and dead connections."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.llm import ChatRequest, Message, ProviderError
from app.llm.providers import wire
from app.llm.providers.openai_compat import OpenAIProvider

COMPLETION = {"id": "c1", "object": "chat.completion", "model": "m-1",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."},
                           "finish_reason": "length"}],
              "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def chunk(text: str | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if usage else [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]
    return {"object": "chat.completion.chunk", "choices": choices, "usage": usage}


class Upstream:
    """One loopback server; `answer(handler, body)` decides each response. Counts connections and requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.connections = 0
        self.answer = lambda handler, body: handler.reply(200, COMPLETION)
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                upstream.connections += 1

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream.requests.append((self.path, dict(self.headers), body))
                upstream.answer(self, body)

            def reply(self, status: int, payload: object, close: bool = False) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if close:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def stream(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in body.split(b"\n\n"):
                    if line:
                        piece = line + b"\n\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


def provider(url: str, **settings: object) -> OpenAIProvider:
    return OpenAIProvider("up", {"base_url": url, "api_key": "sk-test-123", "models": ["m-1"], "timeout": 5.0,
                                 **settings})


def ask(text: str = "Say hello.") -> ChatRequest:
    return ChatRequest(messages=[Message("system", "Be brief."), Message("user", text)], max_tokens=3,
                       temperature=0.0)


def test_a_chat_sends_openai_json_with_the_key_organization_and_headers(upstream):
    result = provider(upstream.url, organization="org-7", headers={"X-Team": "blue"}).chat(ask())
    assert (result.content, result.model, result.finish_reason) == ("Hello there.", "m-1", "length")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.estimated) == (7, 3, False)
    path, headers, body = upstream.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test-123"
    assert headers["OpenAI-Organization"] == "org-7" and headers["X-Team"] == "blue"
    assert headers["Content-Type"] == "application/json"
    assert body == {"model": "m-1", "temperature": 0.0, "max_tokens": 3,
                    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]}


def test_chats_reuse_one_keep_alive_connection(upstream):
    llm = provider(upstream.url)
    for _ in range(5):
        llm.chat(ask())
    upstream.answer = lambda handler, body: handler.stream(sse(chunk("Hi"), chunk(finish="stop"), b"[DONE]"))
    assert "".join(c.delta or "" for c in llm.stream(ask())) == "Hi"  # a stream is read to its end
    upstream.answer = lambda handler, body: handler.reply(200, COMPLETION)
    llm.chat(ask())
    assert len(upstream.requests) == 7 and upstream.connections == 1


def test_a_request_leaves_in_one_send_with_its_body(upstream):
    # Headers and body in one segment: no second write for Nagle's algorithm and delayed ACKs to hold.
    sent: list[bytes] = []

    class Recording(wire._HTTPConnection):
        def send(self, data):
            sent.append(bytes(data))
            super().send(data)

    connection = Recording("127.0.0.1", upstream.server.server_address[1], timeout=5)
    body = json.dumps({"model": "m-1", "messages": []}).encode()
    connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read()) == COMPLETION
    connection.close()
    assert len(sent) == 1 and sent[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert sent[0].endswith(b"\r\n\r\n" + body)
    assert upstream.requests[0][2] == {"model": "m-1", "messages": []}


def test_a_connection_the_server_closed_is_not_reused(upstream):
    llm = provider(upstream.url)
    upstream.answer = lambda handler, body: handler.reply(200, COMPLETION, close=True)
    llm.chat(ask())
    llm.chat(ask())
    assert upstream.connections == 2


def test_an_idle_connection_closed_by_the_server_is_replaced_before_sending(upstream):
    llm = provider(upstream.url)
    llm.chat(ask())
    idle = llm._pool._idle[0]
    idle.sock.shutdown(socket.SHUT_RDWR)  # what a server's keep-alive timeout looks like to us: EOF
    time.sleep(0.05)
    assert llm.chat(ask()).content == "Hello there."
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(("status", "payload", "message", "retryable"), [
    (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}},
     "Incorrect API key provided", True),
    (400, {"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}},
     "max_tokens is too large", False),
    (422, {"detail": "messages: field required"}, "messages: field required", False),
    (503, {"unexpected": True}, "upstream answered HTTP 503", True),
])
def test_an_error_status_becomes_a_provider_error_with_the_upstream_message(upstream, status, payload, message,
                                                                           retryable):
    upstream.answer = lambda handler, body: handler.reply(status, payload)
    llm = provider(upstream.url)
    with pytest.raises(ProviderError) as raised:
        llm.chat(ask())
    assert (raised.value.status, str(raised.value), raised.value.retryable) == (status, message, retryable)
    upstream.answer = lambda handler, body: handler.reply(200, COMPLETION)
    assert llm.chat(ask()).content == "Hello there."  # the error's connection was read out and reused
    assert upstream.connections == 1


def test_a_stream_yields_deltas_then_the_upstream_usage(upstream):
    usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    upstream.answer = lambda handler, body: handler.stream(
        b": keep-alive\n\n" + sse(chunk("Hel"), chunk("lo"), chunk(finish="stop"), chunk(usage=usage), b"[DONE]"))
    chunks = list(provider(upstream.url).stream(ask()))
    assert [c.delta for c in chunks[:-1]] == ["Hel", "lo"]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.as_dict() == usage
    assert upstream.requests[0][2]["stream"] is True
    assert upstream.requests[0][2]["stream_options"] == {"include_usage": True}


def test_a_server_refusing_stream_options_is_asked_without_them_and_tokens_are_counted(upstream):
    def answer(handler, body):
        if "stream_options" in body:
            handler.reply(400, {"error": {"message": "Unrecognized request argument: stream_options"}})
        else:
            handler.stream(sse(chunk("Hi there"), chunk(finish="stop"), b"[DONE]"))

    upstream.answer = answer
    llm = provider(upstream.url)
    for _ in range(2):
        last = list(llm.stream(ask()))[-1]
        assert last.usage.estimated and last.usage.completion_tokens > 0
    sent = [body for _, _, body in upstream.requests]
    assert ["stream_options" in body for body in sent] == [True, False, False]  # remembered after one refusal


def test_an_in_band_error_line_fails_the_stream(upstream):
    upstream.answer = lambda handler, body: handler.stream(sse(chunk("Hi"), {"error": {"message": "model crashed"}}))
    chunks = provider(upstream.url).stream(ask())
    assert next(chunks).delta == "Hi"
    with pytest.raises(ProviderError, match="the stream failed: model crashed"):
        list(chunks)


def cut_off(handler, chunked: bool) -> None:
    """Some text, then the server goes away: no finish reason, no [DONE], no end of the body."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding" if chunked else "Connection", "chunked" if chunked else "close")
    handler.end_headers()
    piece = sse(chunk("Once upon"))
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
    handler.wfile.flush()
    handler.close_connection = True


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "until-close"])
def test_a_stream_cut_off_mid_answer_fails_instead_of_looking_finished(upstream, chunked):
    upstream.answer = lambda handler, body: cut_off(handler, chunked)
    chunks = provider(upstream.url).stream(ask())
    assert next(chunks).delta == "Once upon"
    with pytest.raises(ProviderError, match="cut off|connection failed"):
        list(chunks)


def test_a_stream_that_finished_without_done_is_complete(upstream):
    upstream.answer = lambda handler, body: handler.stream(sse(chunk("Hi"), chunk(finish="length")))
    chunks = list(provider(upstream.url).stream(ask()))
    assert [c.delta for c in chunks[:-1]] == ["Hi"] and chunks[-1].finish_reason == "length"


def test_a_slow_upstream_times_out(upstream):
    upstream.answer = lambda handler, body: (time.sleep(1.5), handler.reply(200, COMPLETION))
    with pytest.raises(ProviderError, match=r"^timed out after 0.5s$"):
        provider(upstream.url, timeout=0.5).chat(ask())


def test_an_unreachable_upstream_is_a_connection_failure():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderError, match="^connection failed: ConnectionRefusedError$") as raised:
        provider(f"http://127.0.0.1:{port}/v1").chat(ask())
    assert raised.value.retryable


def test_a_proxied_upstream_goes_through_the_sdk_client(monkeypatch, upstream):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert wire.proxied("https://api.openai.com/v1")
    assert not wire.proxied(upstream.url)  # NO_PROXY
    assert provider("https://api.openai.com/v1")._pool is None  # sent by the SDK, which honours the proxy
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY")
    assert provider(upstream.url)._pool is None
