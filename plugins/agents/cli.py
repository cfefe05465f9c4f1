"""`flask agents ...`: keep the built-in catalog in the database up to date."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from . import service
from .catalog import BUILTIN_AGENTS, PRESET_CHAINS

agents_cli = AppGroup("agents", help="Built-in agents and chains.")


@agents_cli.command("seed")
def seed() -> None:
    """Create or update the built-in agents (idempotent; the migration runs it once too)."""
    counts = service.seed_catalog()
    click.echo(f"built-in agents: {counts['created']} created, {counts['updated']} updated, "
               f"{counts['unchanged']} unchanged")


@agents_cli.command("catalog")
def show_catalog() -> None:
    """List the built-in agents and preset chains."""
    for agent in BUILTIN_AGENTS:
        click.echo(f"{agent['slug']:<24} {agent['category']:<14} {agent['name']}")
    for chain in PRESET_CHAINS:
        steps = " -> ".join(step.get("agent") or "prompt" for step in chain["steps"])
        click.echo(f"{chain['slug']:<24} {'chain':<14} {steps}")
