"""The built-in catalog: public, useful, seeded by the migration and by `flask agents seed`, read-only."""
from __future__ import annotations

import pytest

from plugins.agents.catalog import BUILTIN_AGENTS, PRESET_CHAINS
from tests.support.identity import FlaskCli, bearer, error_of

from .conftest import make_agent

pytestmark = pytest.mark.db

EXPECTED = {"code-reviewer", "test-writer", "documentation-writer", "bug-finder", "refactoring-advisor",
            "commit-message-writer", "sql-helper", "code-explainer"}


def test_catalog_is_public_and_lists_the_developer_agents(client):
    response = client.get("/v1/agents/catalog")  # no credential at all
    assert response.status_code == 200
    agents = response.get_json()["data"]
    assert len(agents) >= 8
    assert EXPECTED <= {agent["id"] for agent in agents}
    for agent in agents:
        assert set(agent) == {"id", "name", "description", "category", "personality"}
        assert agent["name"] and agent["category"] and len(agent["description"]) > 40


def test_each_builtin_has_a_real_system_prompt(client):
    for slug in EXPECTED:
        response = client.get(f"/v1/agents/catalog/{slug}")
        assert response.status_code == 200, slug
        detail = response.get_json()["data"]
        assert detail["id"] == slug
        assert len(detail["system_prompt"]) > 600, slug  # instructions, not a one-liner
    error_of(client.get("/v1/agents/catalog/no-such-agent"), 404, "NOT_FOUND")


def test_builtins_are_readable_by_slug_and_read_only(client, alice):
    got = client.get("/v1/agents/code-reviewer", headers=bearer(alice))
    assert got.status_code == 200
    assert got.get_json()["data"]["builtin"] is True
    error_of(client.patch("/v1/agents/code-reviewer", json={"name": "mine now"}, headers=bearer(alice)), 403,
             "BUILTIN_READ_ONLY")
    error_of(client.delete("/v1/agents/code-reviewer", headers=bearer(alice)), 403, "BUILTIN_READ_ONLY")
    # Built-ins are not "your agents".
    assert client.get("/v1/agents", headers=bearer(alice)).get_json()["data"] == []
    make_agent(client, alice)
    assert client.get("/v1/agents/code-reviewer", headers=bearer(alice)).get_json()["data"]["name"] == "Code Reviewer"


def test_seeding_is_idempotent_and_repairs_edits(agents_app):
    from app.extensions import db
    from plugins.agents import service
    from plugins.agents.models import Agent

    with agents_app.app_context():
        assert service.seed_catalog() == {"created": 0, "updated": 0, "unchanged": len(BUILTIN_AGENTS)}
        agent = db.session.scalar(db.select(Agent).where(Agent.slug == "sql-helper"))
        agent.system_prompt = "tampered"
        db.session.commit()
        assert service.seed_catalog()["updated"] == 1
        db.session.expire_all()
        agent = db.session.scalar(db.select(Agent).where(Agent.slug == "sql-helper"))
        assert agent.system_prompt.startswith("You are a database expert")


def test_preset_chains_name_catalog_agents():
    slugs = {agent["slug"] for agent in BUILTIN_AGENTS}
    for chain in PRESET_CHAINS:
        assert chain["steps"] and all(step["agent"] in slugs for step in chain["steps"]), chain["slug"]


@pytest.mark.slow
def test_the_migration_and_the_command_seed_the_catalog(tmp_path):
    cli = FlaskCli(tmp_path)
    try:
        cli.migrate()  # `flask db upgrade heads` on an empty database: the data migration seeds the catalog
        client = cli.app().test_client()
        assert {a["id"] for a in client.get("/v1/agents/catalog").get_json()["data"]} >= EXPECTED
        result = cli.run("agents", "seed")
        assert result.returncode == 0, result.stderr
        assert f"0 created, 0 updated, {len(BUILTIN_AGENTS)} unchanged" in result.stdout
        every = cli.run("seed")  # the core command runs each plugin's seed hook
        assert every.returncode == 0, every.stderr
        assert f"agents: 0 created, 0 updated, {len(BUILTIN_AGENTS)} unchanged" in every.stdout
        listing = cli.run("agents", "catalog")
        assert "code-reviewer" in listing.stdout and "review-test-document" in listing.stdout
    finally:
        cli.close()
