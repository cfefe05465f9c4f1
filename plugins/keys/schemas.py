"""Request and response shapes of the keys plugin."""
import marshmallow as ma
from marshmallow import validate

from app.http import PageArgs, Timestamp

from .keyformat import ENVIRONMENTS

STATUSES = ("active", "revoked", "expired")
_TAG = ma.fields.String(validate=validate.Length(min=1, max=40))
_PROJECT = ma.fields.String(validate=validate.Length(min=1, max=100))


class KeyCreateSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=validate.Length(min=1, max=100))
    description = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    scopes = ma.fields.List(ma.fields.String(validate=validate.Length(min=1, max=64)), required=True,
                            validate=validate.Length(min=1, max=100))
    expires_in = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=20),
                                  metadata={"example": "90d"})
    expires_at = ma.fields.AwareDateTime(load_default=None, allow_none=True)
    rate_limit = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64),
                                  metadata={"example": "1000/15 minutes"})
    allowed_projects = ma.fields.List(_PROJECT, load_default=None, allow_none=True, validate=validate.Length(max=100))
    tags = ma.fields.List(_TAG, load_default=list, validate=validate.Length(max=20))
    environment = ma.fields.String(load_default="live", validate=validate.OneOf(ENVIRONMENTS))


class UsageSchema(ma.Schema):
    requests = ma.fields.Integer(required=True)
    errors = ma.fields.Integer(required=True)


class KeySchema(ma.Schema):
    id = ma.fields.String(required=True)
    user_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True, allow_none=True)
    environment = ma.fields.String(required=True, validate=validate.OneOf(ENVIRONMENTS))
    masked_key = ma.fields.String(required=True, metadata={"example": "lnos_live_ab12...wxyz"})
    scopes = ma.fields.List(ma.fields.String(), required=True)
    allowed_projects = ma.fields.List(ma.fields.String(), required=True, allow_none=True)
    tags = ma.fields.List(ma.fields.String(), required=True)
    rate_limit = ma.fields.String(required=True, allow_none=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(STATUSES))
    expires_at = Timestamp(required=True, allow_none=True)
    revoked_at = Timestamp(required=True, allow_none=True)
    created_at = Timestamp(required=True)
    last_used_at = Timestamp(required=True, allow_none=True)
    usage = ma.fields.Nested(UsageSchema, required=True)


class NewKeySchema(KeySchema):
    key = ma.fields.String(required=True, metadata={"description": "The secret: shown only in this response."})
    warning = ma.fields.String(required=True)


class KeyListArgs(PageArgs):
    status = ma.fields.String(load_default=None, validate=validate.OneOf(STATUSES))
    environment = ma.fields.String(load_default=None, validate=validate.OneOf(ENVIRONMENTS))
    tag = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=40))


class AdminKeyListArgs(KeyListArgs):
    user_id = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=40))


class RotateSchema(ma.Schema):
    grace_period = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=20),
                                    metadata={"description": "How long the old secret keeps working, e.g. '1h' "
                                                             "(at most 7 days; default: it stops at once)."})


class ScopeSchema(ma.Schema):
    scope = ma.fields.String(required=True)
    description = ma.fields.String(required=True)
    plugin = ma.fields.String(required=True)
    grantable = ma.fields.Boolean(required=True, metadata={"description": "Whether you may give it to a key."})


class TopKeySchema(ma.Schema):
    id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    user_id = ma.fields.String(required=True)
    requests = ma.fields.Integer(required=True)


class KeyStatsSchema(ma.Schema):
    total = ma.fields.Integer(required=True)
    active = ma.fields.Integer(required=True)
    revoked = ma.fields.Integer(required=True)
    expired = ma.fields.Integer(required=True)
    by_environment = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(), required=True)
    requests = ma.fields.Integer(required=True)
    errors = ma.fields.Integer(required=True)
    top_keys = ma.fields.List(ma.fields.Nested(TopKeySchema), required=True)
