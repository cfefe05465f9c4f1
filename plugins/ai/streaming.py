"""Bodies of streamed chats: LunaOS SSE events and OpenAI chunks.

A body runs after the view returned, outside the request context (the
request and its database connection are released at once, as in app/sse.py),
inside an app context of its own. However it ends (finished, provider failure,
or the client hanging up, which the server reports by closing the body) the
generation is closed: the upstream stream stops and the usage is booked.

LunaOS events (`POST /v1/ai/chat` with `stream: true`):
    event: token   data: {"delta": "..."}                   one per piece of text
    event: done    data: {response, model, provider, finish_reason, tokens_used, processing_time_ms}
    event: error   data: {"code": "LLM_UPSTREAM_ERROR", "message": "..."}   instead of `done`
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Flask, current_app
from flask.wrappers import Response
from werkzeug.wsgi import ClosingIterator

from app.sse import format_event

from . import openai_format
from .service import Generation, llm_headers

log = logging.getLogger("lunaos.ai")
UPSTREAM_FAILED = "The model provider failed while streaming the answer; the text so far was kept in your usage."


def _failed(generation: Generation, error: Exception) -> None:
    log.warning("AI stream from %s failed after %d characters: %s", generation.provider, len(generation.text),
                error)


def chat_events(app: Flask, generation: Generation) -> Iterator[str]:
    with app.app_context():
        try:
            for delta in generation.deltas():
                yield format_event({"delta": delta}, event="token")
        except Exception as error:  # GeneratorExit (client gone) is not an Exception: close() handles it
            _failed(generation, error)
            generation.close()
            yield format_event({"code": "LLM_UPSTREAM_ERROR", "message": UPSTREAM_FAILED}, event="error")
            return
        generation.close()
        yield format_event(generation.answer(), event="done")


def completion_chunks(app: Flask, generation: Generation, writer: openai_format.ChunkWriter) -> Iterator[str]:
    with app.app_context():
        try:
            yield writer.first()
            for delta in generation.deltas():
                yield writer.delta(delta)
        except Exception as error:
            _failed(generation, error)
            generation.close()
            yield openai_format.error_chunk(UPSTREAM_FAILED, code="upstream_error")
            return
        usage = generation.close()
        yield writer.finish(generation.finish_reason)
        if writer.include_usage:
            yield writer.usage(usage)
        yield openai_format.DONE


def response(body: Iterator[str], generation: Generation) -> Response:
    """A text/event-stream response that books the generation when the server closes it."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def close() -> None:
        # The body's own clean-up ran first (ClosingIterator closes the generator before the
        # callbacks); this covers a body never started or stopped at a yield.
        with app.app_context():
            generation.close()

    result = Response(ClosingIterator(body, [close]), mimetype="text/event-stream")
    result.headers["Cache-Control"] = "no-cache"
    result.headers["X-Accel-Buffering"] = "no"  # nginx: pass each piece through at once
    for name, value in llm_headers(generation.provider, generation.attempts).items():
        result.headers[name] = value
    return result
