"""`flask users ...`: account administration from the shell."""
from __future__ import annotations

import sys

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from app.errors import ApiError
from app.extensions import db

from . import service
from .models import TIERS, User

users_cli = AppGroup("users", help="Create and manage user accounts.")


def _fail(error: ApiError) -> None:
    fields = error.details.get("fields") if error.details else None
    detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()) if fields else ""
    raise click.ClickException(f"{error.message} {detail}".strip())


def _user(email: str) -> User:
    user = service.find_by_email(email)
    if user is None:
        raise click.ClickException(f"no user with email {email!r}")
    return user


@users_cli.command("create")
@click.argument("email")
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@click.option("--name", default=None, help="Display name.")
@click.option("--tier", type=click.Choice(TIERS), default="free", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
def create(email: str, admin: bool, name: str | None, tier: str, password_stdin: bool) -> None:
    """Create an account (asks for the password unless --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = service.create_user(email, password, name=name, role="admin" if admin else "user", tier=tier)
    except ApiError as error:
        _fail(error)
    click.echo(f"created {user.id} {user.email} role={user.role} tier={user.tier}")


@users_cli.command("list")
@click.option("--search", default=None, help="Filter by email or name.")
def list_users(search: str | None) -> None:
    """Every account: id, email, role, tier, state."""
    query = sa.select(User).order_by(User.created_at)
    if search:
        query = query.where(User.email.contains(search.lower(), autoescape=True))
    click.echo(f"{'ID':<32} {'EMAIL':<36} {'ROLE':<6} {'TIER':<5} {'MFA':<4} STATE")
    for user in db.session.scalars(query):
        click.echo(f"{user.id:<32} {user.email:<36} {user.role:<6} {user.tier:<5} "
                   f"{'on' if user.mfa_enabled else 'off':<4} {'disabled' if user.disabled else 'active'}")


@users_cli.command("set-tier")
@click.argument("email")
@click.argument("tier", type=click.Choice(TIERS))
def set_tier(email: str, tier: str) -> None:
    """Set an account's tier (normally billing does this)."""
    user = service.set_tier(_user(email).id, tier)
    click.echo(f"{user.email} tier={user.tier}")


@users_cli.command("disable")
@click.argument("email")
def disable(email: str) -> None:
    """Disable an account: its sessions and keys stop working at once."""
    try:
        user = service.update_user(_user(email).id, {"disabled": True})
    except ApiError as error:
        _fail(error)
    click.echo(f"{user.email} disabled")


@users_cli.command("enable")
@click.argument("email")
def enable(email: str) -> None:
    """Re-enable a disabled account."""
    user = service.update_user(_user(email).id, {"disabled": False})
    click.echo(f"{user.email} enabled")
