"""HTTP routes of the ai plugin.

`blp` (/v1/ai) speaks the LunaOS envelope. `openai_blp` (/v1) is the
OpenAI-compatible API: plain OpenAI objects, and OpenAI-shaped errors for every
failure on its routes (authentication, scopes, validation, rate limits, no
provider), so the `openai` SDKs work unchanged with `base_url=<server>/v1` and a
LunaOS API key (or session token) as the API key.
"""
from __future__ import annotations

import logging
from copy import deepcopy
from typing import Any

from flask import current_app, jsonify
from flask.views import MethodView
from werkzeug.exceptions import HTTPException

from app.errors import ApiError, handle_api_error
from app.http import Blueprint
from app.llm import ModelNotFound
from app.ratelimit import limit_group
from app.security import authenticated_principal, require

from . import openai_format, service, streaming
from .schemas import (ChatCompletionChunkSchema, ChatCompletionRequestSchema, ChatCompletionSchema, ChatEventSchema,
                      ChatRequestSchema, ChatResponseSchema, ModelListSchema, ModelSchema, OpenAIErrorSchema,
                      StatusSchema, UsageArgs, UsageRowSchema)

log = logging.getLogger("lunaos.ai")
LIMIT_GROUP = "ai"

blp = Blueprint("ai", __name__, url_prefix="/v1/ai",
                description="AI gateway: provider status, chat (JSON or server-sent events) and token usage.")
openai_blp = Blueprint("ai_openai", __name__, url_prefix="/v1",
                       description="OpenAI-compatible API: use any OpenAI client with base_url=<server>/v1 and a "
                                   "LunaOS API key. Bodies and errors are OpenAI's, without the LunaOS envelope.")


def _caller() -> service.Caller:
    return service.Caller.of(authenticated_principal())


# --------------------------------------------------------------------------- LunaOS routes


@blp.errorhandler(ApiError)
def _api_error(error: ApiError):
    """The core's envelope, plus the X-LLM-Attempts of a chat that failed upstream."""
    response = handle_api_error(error)
    response.headers.update(service.error_headers(error))
    return response


@blp.route("/status")
class Status(MethodView):
    @require()
    @blp.response(200, StatusSchema)
    def get(self):
        """Providers, their models and health, and the routing strategy

        Any authenticated caller may read it (a client checks it before offering AI features;
        it holds no secrets); chatting needs the ai:use scope.
        """
        return service.status()


@blp.route("/chat")
class Chat(MethodView):
    @limit_group(LIMIT_GROUP)
    @require("ai:use")
    @blp.arguments(ChatRequestSchema())  # an instance: a class would be built anew per request
    @blp.response(200, ChatResponseSchema)
    @blp.alt_response(200, schema=ChatEventSchema, content_type="text/event-stream", success=True,
                      description="The answer; with `stream: true`, events `token` {delta}, then `done` (the "
                                  "JSON answer's object) or `error` {code, message}.")
    def post(self, body):
        """Chat with a model; `stream: true` answers with server-sent events

        Headers: X-LLM-Provider (who answered), X-LLM-Attempts (every provider tried, in order).
        Free-tier accounts also have the RATELIMIT_AI_FREE budget (default 100/hour) for chats.
        """
        caller = _caller()
        provider = body.pop("provider", None)
        request = service.build_request(body["messages"], model=body.get("model"), temperature=body["temperature"],
                                        max_tokens=body["max_tokens"])
        if body["stream"]:
            generation = service.Generation(caller, request, provider)
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            return streaming.response(streaming.chat_events(app, generation), generation)
        result = service.complete(caller, request, provider)
        return service.chat_answer(result), service.llm_headers(result.provider, result.attempts)


@blp.route("/usage")
class Usage(MethodView):
    @require("ai:use")
    @blp.arguments(UsageArgs(), location="query")
    @blp.response(200, UsageRowSchema(many=True))
    def get(self, args):
        """Your token usage per day, provider, model and key (an API key sees its own only)"""
        return service.usage(_caller(), args["days"])


# --------------------------------------------------------------------------- OpenAI-compatible routes


def _openai_error_doc(description: str) -> dict[str, Any]:
    return {"schema": OpenAIErrorSchema(), "description": description, "content_type": None}


OPENAI_ERRORS = {
    400: "invalid_request_error: malformed JSON or a bad parameter (`param` names it)",
    401: "invalid_api_key: missing, unknown, revoked or expired key",
    403: "insufficient_scope: the key lacks ai:use",
    404: "model_not_found",
    429: "rate_limit_exceeded (Retry-After says when to retry)",
    502: "upstream_error: every provider tried failed",
    503: "llm_unavailable: no provider is configured",
}


def openai_documented(*statuses: int):  # type: ignore[no-untyped-def]
    """Document OpenAI-shaped errors on a view instead of the envelope ones `require` and
    `arguments` add (validation failures are 400 here, as OpenAI answers them, not 422)."""

    def decorator(func):  # type: ignore[no-untyped-def]
        doc = deepcopy(getattr(func, "_apidoc", {}))
        doc.get("arguments", {}).get("responses", {}).pop(422, None)
        responses = doc.setdefault("response", {}).setdefault("responses", {})
        for status in statuses:
            responses[status] = [_openai_error_doc(OPENAI_ERRORS[status])]
        func._apidoc = doc
        return func

    return decorator


@openai_blp.errorhandler(ApiError)
def _openai_api_error(error: ApiError):
    status, body, headers = openai_format.from_api_error(error)
    return _openai_error_response(status, body, {**headers, **service.error_headers(error)})


@openai_blp.errorhandler(HTTPException)
def _openai_http_error(error: HTTPException):
    status, body, headers = openai_format.from_http_exception(error)
    return _openai_error_response(status, body, headers)


@openai_blp.errorhandler(Exception)
def _openai_unexpected(error: Exception):
    from flask import g, request

    log.exception("unhandled exception", extra={"request_id": g.get("request_id"), "path": request.path})
    body = openai_format.error_body("Internal server error; quote the X-Request-ID header when reporting it.",
                                    type="server_error")
    return _openai_error_response(500, body, {})


def _openai_error_response(status: int, body: dict[str, Any], headers: dict[str, str]):
    response = jsonify(body)
    response.status_code = status
    for name, value in headers.items():
        response.headers[name] = value
    return response


@openai_blp.route("/chat/completions")
class ChatCompletions(MethodView):
    @openai_documented(400, 401, 403, 404, 429, 502, 503)
    @limit_group(LIMIT_GROUP)
    @require("ai:use")
    @openai_blp.arguments(ChatCompletionRequestSchema())
    @openai_blp.response(200, ChatCompletionSchema, envelope=False)
    @openai_blp.alt_response(200, schema=ChatCompletionChunkSchema, content_type="text/event-stream", success=True,
                             description="A `chat.completion`; with `stream: true`, `data: <chat.completion.chunk>` "
                                         "lines, then `data: [DONE]` (a failure mid-stream is a "
                                         "`data: {\"error\": ...}` line instead).")
    def post(self, body):
        """Create a chat completion (OpenAI-compatible)

        `stream: true` answers with `chat.completion.chunk` events and `data: [DONE]`;
        `stream_options.include_usage` adds a last chunk with the usage. Headers: X-LLM-Provider,
        X-LLM-Attempts. Errors are OpenAI's `{"error": {message, type, param, code}}`.
        """
        caller = _caller()
        max_tokens = body["max_completion_tokens"] or body["max_tokens"]
        request = service.build_request(
            body["messages"], model=body["model"], max_tokens=max_tokens,
            temperature=1.0 if body["temperature"] is None else body["temperature"],  # OpenAI's default
            top_p=body["top_p"], stop=body["stop"], seed=body["seed"], user=body["user"])
        if body["stream"]:
            generation = service.Generation(caller, request)
            options = body["stream_options"] or {}
            writer = openai_format.ChunkWriter(generation.model, include_usage=bool(options.get("include_usage")))
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            return streaming.response(streaming.completion_chunks(app, generation, writer), generation)
        result = service.complete(caller, request)
        return openai_format.completion(result), service.llm_headers(result.provider, result.attempts)


@openai_blp.route("/models")
class Models(MethodView):
    @openai_documented(401, 403)
    @require("ai:use")
    @openai_blp.response(200, ModelListSchema, envelope=False)
    def get(self):
        """List the models of every configured provider (OpenAI-compatible)"""
        return openai_format.model_list(service.models())


@openai_blp.route("/models/<path:model_id>")
class Model(MethodView):
    @openai_documented(401, 403, 404)
    @require("ai:use")
    @openai_blp.response(200, ModelSchema, envelope=False)
    def get(self, model_id):
        """One model (OpenAI-compatible); 404 model_not_found when no provider serves it"""
        model = service.find_model(model_id)
        if model is None:
            raise ModelNotFound(f"The model `{model_id}` does not exist or you do not have access to it.")
        return openai_format.model_object(model)

