"""HTTP routes of the keys plugin."""
from flask.views import MethodView

from app.http import Blueprint
from app.security import authenticated_principal, require

from . import service
from .schemas import (AdminKeyListArgs, KeyCreateSchema, KeyListArgs, KeySchema, KeyStatsSchema, NewKeySchema,
                      RotateSchema, ScopeSchema)

blp = Blueprint("api_keys", __name__, url_prefix="/v1/api-keys", description="Your API keys.")
admin_blp = Blueprint("admin_keys", __name__, url_prefix="/v1/admin/keys", description="Every user's API keys.")


def _shown_once(key, token: str) -> dict:
    return {**service.view(key), "key": token, "warning": service.WARNING}


@blp.route("")
class Keys(MethodView):
    @require("keys:write")
    @blp.arguments(KeyCreateSchema)
    @blp.response(201, NewKeySchema)
    def post(self, body):
        """Create a key (its secret is in this response only)"""
        key, token = service.create(authenticated_principal(), **body)
        return _shown_once(key, token)

    @require("keys:read")
    @blp.arguments(KeyListArgs, location="query")
    @blp.paginated(KeySchema)
    def get(self, args):
        """Your keys, newest first, masked"""
        return service.list_keys(authenticated_principal().user_id, **args)


@blp.route("/scopes")
class Scopes(MethodView):
    @require()
    @blp.response(200, ScopeSchema(many=True))
    def get(self):
        """Every scope the loaded plugins declare, and whether you may grant it"""
        return service.scope_catalog(authenticated_principal())


@blp.route("/<key_id>")
class Key(MethodView):
    @require("keys:read")
    @blp.response(200, KeySchema)
    def get(self, key_id):
        """One of your keys"""
        return service.get(authenticated_principal().user_id, key_id)

    @require("keys:write")
    @blp.response(204)
    def delete(self, key_id):
        """Revoke a key: it fails on its very next request, on every worker"""
        principal = authenticated_principal()
        service.revoke(principal.user_id, key_id, actor=principal.user_id)


@blp.route("/<key_id>/rotate")
class Rotate(MethodView):
    @require("keys:write")
    @blp.arguments(RotateSchema)
    @blp.response(200, NewKeySchema)
    def post(self, body, key_id):
        """New secret, same settings; the old secret stops now or after a grace period"""
        principal = authenticated_principal()
        key, token = service.rotate(principal.user_id, key_id, body.get("grace_period"), caller=principal)
        return _shown_once(key, token)


@admin_blp.route("")
class AdminKeys(MethodView):
    @require("admin:keys")
    @admin_blp.arguments(AdminKeyListArgs, location="query")
    @admin_blp.paginated(KeySchema)
    def get(self, args):
        """Every key, filterable by user, status, environment and tag"""
        user_id = args.pop("user_id")
        return service.list_keys(user_id, **args)


@admin_blp.route("/stats")
class AdminStats(MethodView):
    @require("admin:keys")
    @admin_blp.response(200, KeyStatsSchema)
    def get(self):
        """Counts by state and environment, total usage, most used keys"""
        return service.stats()


@admin_blp.route("/<key_id>")
class AdminKey(MethodView):
    @require("admin:keys")
    @admin_blp.response(204)
    def delete(self, key_id):
        """Revoke anyone's key"""
        service.revoke(None, key_id, actor=authenticated_principal().user_id)
