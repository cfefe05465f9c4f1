"""Schemas of the core's own routes."""
import marshmallow as ma


class RootSchema(ma.Schema):
    status = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    version = ma.fields.String(required=True)
    docs = ma.fields.String(required=True)


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["healthy", "degraded", "unhealthy"]))
    version = ma.fields.String(required=True)
    timestamp = ma.fields.String(required=True)
    services = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(), required=True)
    plugins = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(), required=True)


class PluginSchema(ma.Schema):
    name = ma.fields.String(required=True)
    version = ma.fields.String(required=True, allow_none=True)
    description = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["loaded", "failed", "disabled"]))
    error = ma.fields.String(required=True, allow_none=True)
    distribution = ma.fields.String(required=True, allow_none=True)
    requires = ma.fields.List(ma.fields.String(), required=True)
    scopes = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(), required=True)
