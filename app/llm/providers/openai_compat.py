"""`openai`: OpenAI and every OpenAI-compatible server (LM Studio, Ollama, vLLM, llama.cpp).

Each configured instance is one upstream with its own base_url, key, timeout and
headers. Retries are the router's business (across providers), never the
client's. Streams ask for usage (`stream_options.include_usage`); a server that
gives none, or refuses the option, gets its tokens counted here.

Chats and streams are one JSON POST each, sent over this process's keep-alive
connections to the upstream (`wire.Pool`, the standard library's http.client):
the official SDK's client took about 1 ms of CPU per call to build and send
the same request, and its typed request transformation and pydantic models of
the answer 0.6 ms more per chat and 0.3 ms per streamed chunk, several times
what the gateway needs for everything else. The SDK still lists models and
answers health checks, and sends the chats when the environment routes the
upstream through a proxy (HTTP(S)_PROXY), which the SDK's client honours.
The wire format read here is OpenAI's: `choices[0].message.content`, and
`data: {...}` lines ending with `data: [DONE]` for streams.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from ...config import ConfigError
from ...json_encoding import loads
from ..base import Provider
from ..types import ChatRequest, ChatResult, Message, ProviderError, StreamChunk, Usage
from . import ListedModels, finish_reason, status_error, wire
from ...process import pid as current_pid

try:  # the HTTP library of the installed SDK: httpx2 in recent releases, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai releases
    import httpx  # type: ignore[no-redef]

log = logging.getLogger("lunaos.llm")
OPENAI_URL = "https://api.openai.com/v1"


def wire_messages(messages: list[Message]) -> list[dict[str, str]]:
    # A `tool` message needs a tool_call_id on this API; ours carry only text, so it goes as user text.
    return [{"role": "user", "content": f"Tool output:\n{m.content}"} if m.role == "tool"
            else {"role": m.role, "content": m.content} for m in messages]


class OpenAIProvider(ListedModels, Provider):
    kind = "openai"
    extra_settings = frozenset({"organization", "headers"})

    def __init__(self, name: str, settings: dict[str, Any]):
        super().__init__(name, settings)
        self.base_url = (settings.get("base_url") or OPENAI_URL).rstrip("/")
        self.api_key = settings.get("api_key") or ""
        if not self.api_key and self.base_url == OPENAI_URL:
            raise ConfigError(f"LLM provider {name!r} (type openai) talks to api.openai.com but has no key: set "
                              "its api_key or LUNAOS_OPENAI_API_KEY (for a local server, set base_url)")
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()
        self._usage_in_streams = True  # until the server refuses stream_options
        self._listed: tuple[float, list[str]] | None = None
        self._pool = None if wire.proxied(self.base_url) else wire.Pool(self.base_url, self._headers(), self.timeout)

    def _headers(self) -> dict[str, str]:
        """What the SDK's client would send besides the body: key, organization, configured headers."""
        headers = {"User-Agent": "lunaos-server"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.settings.get("organization"):
            headers["OpenAI-Organization"] = self.settings["organization"]
        headers.update(self.settings.get("headers") or {})
        return headers

    @classmethod
    def settings_defaults(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {"api_key": config.get("OPENAI_API_KEY") or ""}

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> list[str]:
        headers = settings.get("headers")
        if headers is not None and (not isinstance(headers, dict)
                                    or not all(isinstance(v, str) for v in headers.values())):
            return ["'headers' must be an object of header names to strings"]
        return []

    def client(self) -> Any:
        # Per process: an HTTP connection pool must not be shared across a fork.
        if self._client is None or self._pid != current_pid():
            with self._lock:
                if self._client is None or self._pid != current_pid():
                    import openai

                    self._client = openai.OpenAI(
                        base_url=self.base_url, api_key=self.api_key or "unused", timeout=self.timeout,
                        max_retries=0, organization=self.settings.get("organization"),
                        default_headers=self.settings.get("headers"))
                    self._pid = current_pid()
        return self._client

    def _error(self, error: Exception) -> ProviderError:
        if isinstance(error, ProviderError):
            return error
        if isinstance(error, wire.WireError):
            if error.kind == "timeout":
                return ProviderError(f"timed out after {self.timeout:g}s", provider=self.name)
            return ProviderError(f"connection failed: {type(error.cause).__name__}", provider=self.name)
        import openai  # only now: a failing chat over the wire must not wait for the SDK's import

        if isinstance(error, openai.APIStatusError):
            return status_error(self.name, error.status_code, _message(error.body, error.status_code))
        if isinstance(error, openai.APITimeoutError | httpx.TimeoutException):
            return ProviderError(f"timed out after {self.timeout:g}s", provider=self.name)
        if isinstance(error, openai.APIConnectionError | httpx.TransportError):
            cause = error.__cause__ or error
            return ProviderError(f"connection failed: {type(cause).__name__}", provider=self.name)
        return ProviderError(f"{type(error).__name__}: {error}"[:300], provider=self.name)

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {"model": request.model or self.default_model or "default",
                                  "messages": wire_messages(request.messages), "temperature": request.temperature}
        for key in ("max_tokens", "top_p", "stop", "seed", "user"):
            value = getattr(request, key)
            if value is not None:
                params[key] = value
        return params

    def _post(self, body: dict[str, Any], stream: bool = False) -> Any:
        """The response of POST /chat/completions, its body unread; an error status raises ProviderError."""
        if self._pool is None:  # proxied: the SDK's client knows the environment's proxies
            return self.client().post("/chat/completions", body=body, cast_to=httpx.Response, stream=stream)
        response = self._pool.post("/chat/completions", body)
        if response.status_code >= 400:
            raise status_error(self.name, response.status_code, _message(response.json(), response.status_code))
        return response

    def chat(self, request: ChatRequest) -> ChatResult:
        try:
            response = self._post(self._params(request))
            data = response.json()
        except Exception as error:
            raise self._error(error) from error
        try:
            choice = data["choices"][0]
            content = (choice.get("message") or {}).get("content") or ""
        except (TypeError, KeyError, IndexError, AttributeError):
            raise ProviderError("the response had no choices", provider=self.name) from None
        usage = _usage(data.get("usage")) or self.estimate_usage(request, content)
        return ChatResult(content=content, model=data.get("model") or request.model or "", provider=self.name,
                          usage=usage, finish_reason=finish_reason(choice.get("finish_reason")))

    def _open_stream(self, request: ChatRequest) -> Any:
        params = {**self._params(request), "stream": True}
        if self._usage_in_streams:
            try:
                return self._post({**params, "stream_options": {"include_usage": True}}, stream=True)
            except Exception as error:
                if _status(error) != 400 or "stream_options" not in str(error):
                    raise
                log.info("llm provider %s does not accept stream_options; counting stream tokens here", self.name)
                self._usage_in_streams = False
        return self._post(params, stream=True)

    def _events(self, response: Any) -> Iterator[dict[str, Any] | None]:
        """The JSON objects of a `data:` event stream, up to `[DONE]`; an in-band error raises.
        A body that ends without `[DONE]` ends with None: the caller decides whether it was cut off."""
        done = False
        for line in response.iter_lines():
            # After [DONE] the body is read to its end, so the connection goes back to the pool
            # (closing a response with unread bytes closes its connection: a new one per chat).
            if done or not line.startswith("data:"):
                continue  # blank separators, `: keep-alive` comments, `event:` names
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                continue
            try:
                event = loads(payload)
            except ValueError:
                raise ProviderError("the stream sent a line that is not JSON", provider=self.name) from None
            if isinstance(event, dict) and event.get("error"):
                error = event["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                raise ProviderError(f"the stream failed: {message}"[:300], provider=self.name)
            if isinstance(event, dict):
                yield event
        if not done:
            yield None

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        try:
            upstream = self._open_stream(request)
        except Exception as error:
            raise self._error(error) from error
        parts: list[str] = []
        usage: Usage | None = None
        reason: str | None = None
        try:
            for event in self._events(upstream):
                if event is None:
                    # The body ended without [DONE]: finished only if a finish reason came (some
                    # servers send no [DONE]); else the server went away mid-answer (a body read
                    # to its close cannot tell that apart from an end, so this is the check).
                    if reason is None:
                        raise ProviderError("the stream was cut off before it finished", provider=self.name)
                    break
                usage = _usage(event.get("usage")) or usage
                for choice in event.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:  # role-only and empty deltas are not output
                        parts.append(text)
                        yield StreamChunk(delta=text)
                    if choice.get("finish_reason"):
                        reason = choice["finish_reason"]
        except Exception as error:
            raise self._error(error) from error
        finally:
            upstream.close()
        if reason is None and not parts:
            raise ProviderError("the stream ended without output or a finish reason", provider=self.name)
        yield StreamChunk(finish_reason=finish_reason(reason),
                          usage=usage or self.estimate_usage(request, "".join(parts)))

    def health(self) -> dict[str, Any]:
        try:
            self.client().models.list(timeout=min(self.timeout, 3.0))
        except Exception as error:  # noqa: BLE001
            return {"status": "down", "detail": str(self._error(error))}
        return {"status": "ok"}

    def close(self) -> None:
        if self._client is not None and self._pid == current_pid():
            self._client.close()
        self._client = None
        if self._pool is not None:
            self._pool.close()


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    return Usage(int(value.get("prompt_tokens") or 0), int(value.get("completion_tokens") or 0))


def _status(error: Exception) -> int | None:
    """The HTTP status of a failed call, from either client."""
    return getattr(error, "status", None) or getattr(error, "status_code", None)


def _message(body: Any, status: int) -> str:
    """The message of an OpenAI-style error body (`{"error": {"message": ...}}`), or a plain one."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])
    if isinstance(inner, str) and inner:
        return inner
    if isinstance(body, dict) and body.get("detail"):  # FastAPI-style servers
        return str(body["detail"])
    if isinstance(body, str) and body.strip():
        return body.strip()
    return f"upstream answered HTTP {status}"
