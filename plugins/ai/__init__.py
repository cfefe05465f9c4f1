"""The AI gateway: provider status, chat (JSON or SSE), token usage and the OpenAI-compatible API."""
from flask import Flask

from app.plugins import Plugin
from app.ratelimit import register_group

from .api import LIMIT_GROUP, blp, openai_blp


def init_app(app: Flask) -> None:
    from . import service

    # The stricter AI budget of the free tier, counted on top of the tier's own limit.
    register_group(app, LIMIT_GROUP, service.ai_limit(app))


plugin = Plugin(
    name="ai",
    version="1.0.0",
    description="AI gateway over the configured LLM providers, including an OpenAI-compatible API.",
    blueprint=(blp, openai_blp),
    requires=("auth", "keys"),
    scopes={"ai:use": "Chat with the configured language models through the gateway"},
    config={
        # Free-tier callers' chat requests (LunaOS and OpenAI-compatible routes), on top of
        # RATELIMIT_TIERS; several limits with ";" ("10/minute;100/hour"); "" turns it off.
        "RATELIMIT_AI_FREE": "100/hour",
    },
    init_app=init_app,
)
