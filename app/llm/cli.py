"""`flask llm status|check|usage`: what the router sees, whether each upstream answers, a user's tokens."""
from __future__ import annotations

import json
import sys

import click
from flask.cli import AppGroup

llm_cli = AppGroup("llm", help="Inspect the language model providers.")


@llm_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status_command(as_json: bool) -> None:
    """Configured providers: models, availability, in-flight requests, latency, cool-down."""
    from . import status

    report = status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report["enabled"]:
        click.echo("no provider configured (set LUNAOS_LLM_PROVIDERS)")
        return
    click.echo(f"strategy: {report['strategy']}")
    click.echo(f"{'NAME':<16} {'KIND':<10} {'AVAILABLE':<10} {'ACTIVE':<7} {'LATENCY':<10} MODELS")
    for p in report["providers"]:
        latency = f"{p['avg_latency_ms']:.0f} ms" if p["avg_latency_ms"] is not None else "-"
        available = "yes" if p["available"] else f"no (until {p['cooldown_until']})"
        click.echo(f"{p['name']:<16} {p['kind']:<10} {available:<10} {p['active_requests']:<7} {latency:<10} "
                   f"{','.join(p['models']) or '-'}")


@llm_cli.command("check")
def check_command() -> None:
    """Ask each provider whether it answers (a cheap call, e.g. listing models); exit 1 if one does not."""
    from . import router

    down = 0
    for provider in router().providers:
        try:
            result = provider.health()
        except Exception as error:  # noqa: BLE001 - reported, not raised
            result = {"status": "down", "detail": type(error).__name__}
        down += result.get("status") != "ok"
        detail = f" ({result['detail']})" if result.get("detail") else ""
        click.echo(f"{provider.name}: {result.get('status')}{detail}")
    if not router().providers:
        click.echo("no provider configured")
    if down:
        sys.exit(1)


@llm_cli.command("usage")
@click.argument("user_id")
@click.option("--days", default=30, show_default=True, help="How many days back, today included.")
def usage_command(user_id: str, days: int) -> None:
    """A user's token usage per day, provider, model and key."""
    from . import usage_for

    click.echo(json.dumps(usage_for(user_id, days), indent=2))
