"""Core admin commands: `flask plugins list|check`, `flask seed`."""
from __future__ import annotations

import json
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .plugins import active, iter_statuses

plugins_cli = AppGroup("plugins", help="Inspect installed plugins.")


@plugins_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_plugins(as_json: bool) -> None:
    """Every installed plugin: version, status, dependencies, scopes."""
    rows = [s.as_dict(with_traceback=as_json) for s in iter_statuses(current_app)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'NAME':<16} {'VERSION':<10} {'STATUS':<9} {'REQUIRES':<20} SCOPES"
    click.echo(header)
    for row in rows:
        click.echo(f"{row['name']:<16} {str(row['version'] or '-'):<10} {row['status']:<9} "
                   f"{','.join(row['requires']) or '-':<20} {','.join(row['scopes']) or '-'}")
        if row["error"]:
            click.echo(f"{'':<16} ! {row['error'].splitlines()[0]}")


@plugins_cli.command("check")
def check_plugins() -> None:
    """Exit 1 if any selected plugin failed to load or start."""
    failed = [s for s in iter_statuses(current_app) if s.status == "failed"]
    for status in failed:
        click.echo(f"{status.name}: {status.error}", err=True)
    if failed:
        sys.exit(1)
    click.echo("all selected plugins loaded")


@click.command("seed")
def seed_command() -> None:
    """Create or refresh every plugin's built-in data (safe to run again)."""
    seeded = 0
    for plugin in active(current_app):
        if plugin.seed is None:
            continue
        summary = plugin.seed()
        seeded += 1
        if isinstance(summary, dict):  # counts, e.g. {"created": 2, "unchanged": 8}
            summary = ", ".join(f"{value} {name}" for name, value in summary.items())
        click.echo(f"{plugin.name}: {summary if summary is not None else 'done'}")
    if not seeded:
        click.echo("no active plugin has built-in data")


def init_app(app: Flask) -> None:
    app.cli.add_command(plugins_cli)
    app.cli.add_command(seed_command)
