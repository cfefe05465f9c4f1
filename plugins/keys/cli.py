"""`flask keys ...`: issue and revoke API keys from the shell."""
from __future__ import annotations

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from app.errors import ApiError
from app.extensions import db
from plugins.auth import service as auth

from . import service
from .keyformat import ENVIRONMENTS
from .models import ApiKey

keys_cli = AppGroup("keys", help="Create, list and revoke API keys.")


def _fail(error: ApiError) -> None:
    fields = (error.details or {}).get("fields") or {}
    detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items())
    raise click.ClickException(f"{error.message} {detail}".strip())


@keys_cli.command("create")
@click.option("--user", "email", required=True, help="Owner's email.")
@click.option("--scope", "scopes", multiple=True, required=True, help="A scope to grant (repeat for more).")
@click.option("--name", default="cli", show_default=True)
@click.option("--expires-in", default=None, help="Lifetime such as 90d, 12h.")
@click.option("--rate-limit", default=None, help="Own limit such as '1000/15 minutes'.")
@click.option("--project", "projects", multiple=True, help="Restrict to a project (repeat for more).")
@click.option("--env", "environment", type=click.Choice(ENVIRONMENTS), default="live", show_default=True)
def create(email, scopes, name, expires_in, rate_limit, projects, environment) -> None:
    """Create a key for a user and print its secret (shown once)."""
    user = auth.find_by_email(email)
    if user is None:
        raise click.ClickException(f"no user with email {email!r}")
    try:
        key, token = service.create_for_user(user.id, name=name, scopes=list(scopes), expires_in=expires_in,
                                             rate_limit=rate_limit, allowed_projects=list(projects) or None,
                                             environment=environment)
    except ApiError as error:
        _fail(error)
    click.echo(f"{key.id} {key.name} scopes={','.join(key.scopes)}")
    click.echo(token)
    click.echo(service.WARNING, err=True)


@keys_cli.command("list")
@click.option("--user", "email", default=None, help="Only this owner's keys.")
def list_keys(email) -> None:
    """Every key (masked): id, owner, status, scopes."""
    query = sa.select(ApiKey).order_by(ApiKey.created_at)
    if email:
        user = auth.find_by_email(email)
        if user is None:
            raise click.ClickException(f"no user with email {email!r}")
        query = query.where(ApiKey.user_id == user.id)
    click.echo(f"{'ID':<32} {'OWNER':<32} {'STATUS':<8} {'MASKED':<26} SCOPES")
    for key in db.session.scalars(query):
        click.echo(f"{key.id:<32} {key.user_id:<32} {key.status:<8} {key.masked:<26} {','.join(key.scopes)}")


@keys_cli.command("revoke")
@click.argument("key_id")
def revoke(key_id) -> None:
    """Revoke a key at once, on every worker."""
    try:
        key = service.revoke(None, key_id, actor="cli")
    except ApiError as error:
        _fail(error)
    click.echo(f"{key.id} revoked")
