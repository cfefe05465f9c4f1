"""HTTP routes of the auth plugin: parse, call the service, respond."""
from flask import request
from flask.views import MethodView

from app.errors import Unauthorized
from app.http import Blueprint
from app.security import authenticated_principal, bearer_token, require

from . import service
from .schemas import (AdminUserSchema, LoginSchema, MfaCodeSchema, MfaDisableSchema, MfaEnrollmentSchema,
                      MfaEnrollSchema,
                      PasswordChangeSchema, RefreshedSchema, RefreshSchema, SessionSchema, SignupSchema,
                      UserListArgs, UserSchema, UserUpdateSchema)

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Accounts, sessions and MFA.")
admin_blp = Blueprint("admin_users", __name__, url_prefix="/v1/admin/users", description="User administration.")


def _session(result: service.Session) -> dict:
    return {"user": result.user, **result.tokens}


@blp.route("/signup")
class Signup(MethodView):
    @require(auth=False)
    @blp.arguments(SignupSchema)
    @blp.response(201, SessionSchema)
    def post(self, body):
        """Create an account and start a session"""
        return _session(service.signup(body["email"], body["password"], body["name"]))


@blp.route("/login")
class Login(MethodView):
    @require(auth=False)
    @blp.arguments(LoginSchema)
    @blp.response(200, SessionSchema)
    def post(self, body):
        """Start a session (wrong email or password: one message for both)"""
        return _session(service.login(body["email"], body["password"], request.remote_addr or "-", body["mfa_code"]))


@blp.route("/refresh")
class Refresh(MethodView):
    @require(auth=False)
    @blp.arguments(RefreshSchema)
    @blp.response(200, RefreshedSchema)
    def post(self, body):
        """Exchange a refresh token for a new access token"""
        token = body.get("refresh_token") or bearer_token()
        if not token:
            raise Unauthorized("Send the refresh token in the body or as a bearer token.")
        return service.refresh(token).tokens


@blp.route("/logout")
class Logout(MethodView):
    @require()
    @blp.response(204)
    def post(self):
        """Revoke this session (its access and refresh tokens)"""
        service.logout(authenticated_principal())


@blp.route("/me")
class Me(MethodView):
    @require()
    @blp.response(200, UserSchema)
    def get(self):
        """The calling user"""
        return service.profile(authenticated_principal())


@blp.route("/password")
class Password(MethodView):
    @require()
    @blp.arguments(PasswordChangeSchema)
    @blp.response(200, SessionSchema)
    def post(self, body):
        """Change the password; every other session is revoked, a new one is returned"""
        return _session(service.change_password(authenticated_principal(), body["current_password"],
                                                body["new_password"]))


@blp.route("/mfa/enroll")
class MfaEnroll(MethodView):
    @require()
    @blp.arguments(MfaEnrollSchema)
    @blp.response(200, MfaEnrollmentSchema)
    def post(self, body):
        """Start TOTP enrolment (needs the password): a secret and an otpauth:// URI"""
        return service.mfa_enroll(authenticated_principal(), body["password"])


@blp.route("/mfa/verify")
class MfaVerify(MethodView):
    @require()
    @blp.arguments(MfaCodeSchema)
    @blp.response(200, UserSchema)
    def post(self, body):
        """Confirm enrolment with a current code; MFA is then required at login"""
        return service.mfa_verify(authenticated_principal(), body["code"])


@blp.route("/mfa/disable")
class MfaDisable(MethodView):
    @require()
    @blp.arguments(MfaDisableSchema)
    @blp.response(200, UserSchema)
    def post(self, body):
        """Turn MFA off (needs the password and a current code)"""
        return service.mfa_disable(authenticated_principal(), body["password"], body["code"])


@admin_blp.route("")
class AdminUsers(MethodView):
    @require("admin:users")
    @admin_blp.arguments(UserListArgs, location="query")
    @admin_blp.paginated(AdminUserSchema)
    def get(self, args):
        """Every user, newest first; search by email or name"""
        return service.list_users(**args)


@admin_blp.route("/<user_id>")
class AdminUser(MethodView):
    @require("admin:users")
    @admin_blp.arguments(UserUpdateSchema)
    @admin_blp.response(200, AdminUserSchema)
    def patch(self, body, user_id):
        """Change a user's role, tier, name or disabled flag (takes effect at once)"""
        return service.update_user(user_id, body, actor=authenticated_principal())
