import marshmallow as ma
from marshmallow import validate

from app.http import PageArgs, Timestamp


class AuditEventSchema(ma.Schema):
    id = ma.fields.String(required=True)
    type = ma.fields.String(required=True)
    actor_id = ma.fields.String(required=True, allow_none=True)
    target_id = ma.fields.String(required=True, allow_none=True)
    ip = ma.fields.String(required=True, allow_none=True)
    user_agent = ma.fields.String(required=True, allow_none=True)
    request_id = ma.fields.String(required=True, allow_none=True)
    data = ma.fields.Dict(required=True)
    created_at = Timestamp(required=True)


class AuditSearchArgs(PageArgs):
    actor_id = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    target_id = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    type = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=80),
                            metadata={"description": "Exact type, or a family such as 'auth.*'."})
    since = ma.fields.AwareDateTime(load_default=None)
    until = ma.fields.AwareDateTime(load_default=None)
