"""The core's routes: `/`, `/health` and `/v1/plugins`."""
from __future__ import annotations

from flask import Flask, current_app
from flask.views import MethodView

from . import health, openapi
from .core_schemas import HealthSchema, PluginSchema, RootSchema
from .http import Blueprint
from .plugins import iter_statuses
from .ratelimit import exempt
from .security import require

blp = Blueprint("core", __name__, description="Service status and loaded plugins.")


@blp.route("/")
class Root(MethodView):
    @require(auth=False)
    @blp.response(200, RootSchema, envelope=False)
    def get(self):
        """Service identity"""
        # The same for the app's lifetime: dumped and encoded once, on the first request.
        encoded = current_app.extensions.get("lunaos.root")
        if encoded is None:
            body = RootSchema().dump({"status": "ok", "name": "lunaos", "version": current_app.config["LUNAOS_VERSION"],
                                      "docs": "/docs"})
            encoded = current_app.extensions["lunaos.root"] = (current_app.json.dumps(body) + "\n").encode()
        return current_app.response_class(encoded, mimetype="application/json")


@blp.route("/health")
class Health(MethodView):
    @require(auth=False)
    @blp.response(200, HealthSchema, envelope=False)
    @blp.alt_response(503, schema=HealthSchema, description="A required service is down.")
    def get(self):
        """Health of the database, Redis, queue and plugins (never rate limited)"""
        return health.response()  # the HealthSchema dump, cached with the report


exempt(Health.get)


@blp.route("/v1/plugins")
class Plugins(MethodView):
    @require()
    @blp.response(200, PluginSchema(many=True))
    def get(self):
        """Installed plugins with version, scopes and status"""
        return [status.as_dict() for status in iter_statuses(current_app)]


def init_app(app: Flask) -> None:
    openapi.register_blueprint(app, blp)
