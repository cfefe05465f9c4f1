"""An OpenAI-compatible server that answers every chat with the same canned completion, at once.

    python -m bench.canned_upstream --port 8090

For `python -m bench.gateway --upstream canned`: a model server's own time
varies by several milliseconds from one request to the next (generation,
prompt cache, the CPU it shares with the gateway), which blurs a few
milliseconds of gateway overhead. This one does no work, so gateway minus
direct is the gateway's own cost. It speaks HTTP/1.1 with keep-alive (the
standard library's threading server), `POST /v1/chat/completions` with and
without `stream` (chunked `data:` lines, one token per chunk, usage when
`stream_options.include_usage`, then `data: [DONE]`) and `GET /v1/models`.
"""
from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "canned"
TOKENS = ["A", " gateway", " forwards", " requests", " to", " other", " servers", "."]


def _completion(model: str, max_tokens: int) -> bytes:
    text = "".join(TOKENS[:max_tokens])
    return json.dumps({
        "id": "chatcmpl-canned", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "length" if max_tokens < len(TOKENS) else "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": min(max_tokens, len(TOKENS)),
                  "total_tokens": 12 + min(max_tokens, len(TOKENS))},
    }).encode()


def _chunks(model: str, max_tokens: int, include_usage: bool) -> list[bytes]:
    base: dict[str, Any] = {"id": "chatcmpl-canned", "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model}
    tokens = TOKENS[:max_tokens]
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in tokens]
    events.append({**base, "choices": [{"index": 0, "delta": {},
                                        "finish_reason": "length" if max_tokens < len(TOKENS) else "stop"}]})
    if include_usage:
        events.append({**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": len(tokens),
                                                        "total_tokens": 12 + len(tokens)}})
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # headers and body leave in one write; flushed per chunk
    disable_nagle_algorithm = True  # as model servers do: each chunk leaves at once, not after the last one's ACK

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model",
                                                                     "owned_by": "bench"}]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path != "/v1/chat/completions":
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        model = body.get("model") or MODEL
        max_tokens = int(body.get("max_tokens") or len(TOKENS))
        if not body.get("stream"):
            self._send(200, _completion(model, max_tokens))
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in _chunks(model, max_tokens, include_usage):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.canned_upstream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"canned upstream on http://{args.host}:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
