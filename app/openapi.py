"""The OpenAPI spec (flask-smorest) and the offline Swagger UI at /docs."""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Blueprint as FlaskBlueprint, Flask, Response, abort, current_app, send_from_directory
from flask_smorest import Api as SmorestApi

from . import idempotency
from .security import SECURITY_SCHEMES

SWAGGER_FILES = {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                 "favicon-32x32.png", "favicon-16x16.png", "index.css"}
# Swagger UI renders with inline style attributes and data: images; nothing else is relaxed.
DOCS_CSP = {"default-src": "'self'", "img-src": "'self' data:", "style-src": "'self' 'unsafe-inline'",
            "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'self'"}


class ErrorDetailSchema(ma.Schema):
    code = ma.fields.String(required=True, metadata={"example": "VALIDATION_ERROR"})
    message = ma.fields.String(required=True)
    details = ma.fields.Dict(required=True)
    request_id = ma.fields.String(required=True, allow_none=True)


class ErrorSchema(ma.Schema):
    error = ma.fields.Nested(ErrorDetailSchema, required=True)


class Api(SmorestApi):
    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        """`app.errors` owns error handling; smorest only documents it."""


def api(app: Flask | None = None) -> Api:
    return (app or current_app).extensions["lunaos.api"]


def register_blueprint(app: Flask, blueprint: Any, **options: Any) -> None:
    api(app).register_blueprint(blueprint, **options)


_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
</head><body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/swagger-ui-standalone-preset.js"></script>
<script src="/docs/init.js"></script>
</body></html>"""

_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout", persistAuthorization: true,
    // The default validator badge sends the spec URL to validator.swagger.io: the docs stay offline.
    validatorUrl: null
  });
};"""


def _docs_blueprint() -> FlaskBlueprint:
    from swagger_ui_bundle import swagger_ui_path

    docs = FlaskBlueprint("docs", __name__)

    @docs.get("/docs")
    def index() -> Response:
        return Response(_INDEX.format(title=current_app.config["API_TITLE"]), mimetype="text/html")

    @docs.get("/docs/init.js")
    def init_js() -> Response:
        return Response(_INIT, mimetype="text/javascript")

    @docs.get("/docs/static/<name>")
    def static_file(name: str) -> Response:
        if name not in SWAGGER_FILES:
            abort(404)
        return send_from_directory(str(swagger_ui_path), name, max_age=86400)

    for view in (index, init_js, static_file):
        view.talisman_view_options = {"content_security_policy": DOCS_CSP}  # type: ignore[attr-defined]
        view._lunaos_rate_exempt = True  # type: ignore[attr-defined]
    return docs


def init_app(app: Flask) -> None:
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("API_SPEC_OPTIONS", {
        "info": {"description": "LunaOS server: accounts, API keys, AI gateway, agents, RAG, executor, "
                                "releases, vault, billing, webhooks and marketplace. Every response is "
                                "an envelope: `{data}` on success, `{error: {code, message, details, "
                                "request_id}}` on failure."},
        "components": {"securitySchemes": SECURITY_SCHEMES},
        "servers": [{"url": "/"}],
    })
    smorest = Api(app, spec_kwargs={"extra_plugins": [idempotency.SpecPlugin(app)]})
    app.extensions["lunaos.api"] = smorest
    app.register_blueprint(_docs_blueprint())

