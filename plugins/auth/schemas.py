"""Request and response shapes of the auth plugin (the OpenAPI contract)."""
import marshmallow as ma
from marshmallow import validate

from app.http import PageArgs, Timestamp

from .models import ROLES, TIERS


class UserSchema(ma.Schema):
    id = ma.fields.String(required=True)
    email = ma.fields.String(required=True)
    name = ma.fields.String(required=True, allow_none=True)
    role = ma.fields.String(required=True, validate=validate.OneOf(ROLES))
    tier = ma.fields.String(required=True, validate=validate.OneOf(TIERS))
    mfa_enabled = ma.fields.Boolean(required=True)
    created_at = Timestamp(required=True)


class AdminUserSchema(UserSchema):
    disabled = ma.fields.Boolean(required=True)
    last_login_at = Timestamp(required=True, allow_none=True)
    updated_at = Timestamp(required=True)


class SignupSchema(ma.Schema):
    email = ma.fields.String(required=True, validate=validate.Length(min=3, max=320))
    password = ma.fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)
    name = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class LoginSchema(ma.Schema):
    email = ma.fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = ma.fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)
    mfa_code = ma.fields.String(load_default=None, allow_none=True, validate=validate.Length(max=12))


class RefreshSchema(ma.Schema):
    refresh_token = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=4096),
                                     metadata={"description": "Or send it as `Authorization: Bearer <refresh>`."})


class SessionSchema(ma.Schema):
    user = ma.fields.Nested(UserSchema, required=True)
    access_token = ma.fields.String(required=True)
    refresh_token = ma.fields.String(required=True)
    token_type = ma.fields.String(required=True)
    expires_in = ma.fields.Integer(required=True)


class RefreshedSchema(ma.Schema):
    access_token = ma.fields.String(required=True)
    token_type = ma.fields.String(required=True)
    expires_in = ma.fields.Integer(required=True)


class PasswordChangeSchema(ma.Schema):
    current_password = ma.fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)
    new_password = ma.fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)


class MfaEnrollmentSchema(ma.Schema):
    secret = ma.fields.String(required=True)
    otpauth_uri = ma.fields.String(required=True)


class MfaEnrollSchema(ma.Schema):
    password = ma.fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)


class MfaCodeSchema(ma.Schema):
    code = ma.fields.String(required=True, validate=validate.Length(min=6, max=12))


class MfaDisableSchema(MfaCodeSchema):
    password = ma.fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)


class UserListArgs(PageArgs):
    search = ma.fields.String(load_default=None, validate=validate.Length(max=320))
    role = ma.fields.String(load_default=None, validate=validate.OneOf(ROLES))
    tier = ma.fields.String(load_default=None, validate=validate.OneOf(TIERS))
    disabled = ma.fields.Boolean(load_default=None)


class UserUpdateSchema(ma.Schema):
    name = ma.fields.String(allow_none=True, validate=validate.Length(max=200))
    role = ma.fields.String(validate=validate.OneOf(ROLES))
    tier = ma.fields.String(validate=validate.OneOf(TIERS))
    disabled = ma.fields.Boolean()

    @ma.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Send at least one of: name, role, tier, disabled.")
