"""`flask keys ...`: the real command (subprocess, FLASK_APP=wsgi) on a migrated SQLite database;
error paths run the same click commands in-process."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.identity import PASSWORD, FlaskCli, bearer, create_key, create_user, error_of, signup

KEY = re.compile(r"^lnos_(live|test)_[0-9A-Za-z]{49}$")


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    from flask_migrate import upgrade

    cli = FlaskCli(tmp_path_factory.mktemp("keys-cli"))
    app = cli.app()
    with app.app_context():
        upgrade(revision="heads")  # what `flask db upgrade heads` runs (tests/plugins/auth/test_cli.py runs that)
    yield cli
    cli.close()


@pytest.mark.slow
def test_keys_help_is_useful(cli):
    result = cli.run("keys", "--help")
    assert result.returncode == 0
    for command in ("create", "list", "revoke"):
        assert command in result.stdout
    assert "key" in result.stdout.lower()


@pytest.mark.slow
def test_keys_create_list_revoke(cli):
    app = cli.app()
    client = app.test_client()
    create_user(app, "robot-owner@example.com")

    created = cli.run("keys", "create", "--user", "Robot-Owner@example.com", "--scope", "keys:read",
                      "--expires-in", "90d", "--name", "robot")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    key = lines[-1].strip()
    assert KEY.match(key), created.stdout
    key_id = lines[0].split()[0]
    assert key_id.startswith("key_") and "scopes=keys:read" in lines[0]
    assert "only once" in created.stderr

    # The printed key works, with the scope and expiry asked for.
    response = client.get(f"/v1/api-keys/{key_id}", headers=bearer(key))
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()["data"]
    assert data["scopes"] == ["keys:read"] and data["name"] == "robot"
    expires = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    error_of(client.post("/v1/api-keys", json={"name": "x", "scopes": ["keys:read"]}, headers=bearer(key)), 403,
             "INSUFFICIENT_SCOPE")

    listed = cli.run("keys", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if key_id in line)
    assert key not in listed.stdout and key[10:] not in listed.stdout
    assert data["masked_key"] in line and "active" in line and "keys:read" in line

    revoked = cli.run("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    error_of(client.get("/v1/auth/me", headers=bearer(key)), 401, "KEY_REVOKED")


@pytest.fixture
def runner(make_app):
    app = make_app()
    return app, app.test_cli_runner()


def test_keys_cli_errors(runner):
    app, run = runner
    create_user(app, "plain@example.com")
    cases = [
        (["keys", "create", "--user", "ghost@example.com", "--scope", "keys:read"], "ghost@example.com"),
        (["keys", "create", "--user", "plain@example.com", "--scope", "admin:users"], "admin:users"),
        (["keys", "create", "--user", "plain@example.com", "--scope", "no:such"], "no:such"),
        (["keys", "create", "--user", "plain@example.com", "--scope", "keys:read", "--expires-in", "soon"],
         "expires_in"),
        (["keys", "create", "--user", "plain@example.com"], "--scope"),
        (["keys", "revoke", "key_doesnotexist"], "no such"),
        (["keys", "list", "--user", "ghost@example.com"], "ghost@example.com"),
    ]
    for args, expected in cases:
        result = run.invoke(args=args)
        assert result.exit_code != 0, (args, result.output)
        assert expected.lower() in result.output.lower(), (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert "lnos_" not in run.invoke(args=["keys", "list"]).output


def test_keys_cli_settings_and_owner_filter(runner):
    app, run = runner
    client = app.test_client()
    owner = signup(client, "owner@example.com")
    create_key(client, owner, name="from-api")
    create_user(app, "other@example.com", PASSWORD)
    result = run.invoke(args=["keys", "create", "--user", "other@example.com", "--scope", "keys:read",
                              "--scope", "keys:write", "--rate-limit", "5/minute", "--project", "p1",
                              "--env", "test"])
    assert result.exit_code == 0, result.output
    key = next(line for line in result.output.splitlines() if line.startswith("lnos_"))
    assert key.startswith("lnos_test_")
    response = client.get("/v1/api-keys", headers=bearer(key))
    assert response.headers["X-RateLimit-Limit"] == "5"
    data = response.get_json()["data"][0]
    assert (data["scopes"], data["allowed_projects"], data["environment"]) == (["keys:read", "keys:write"], ["p1"],
                                                                             "test")
    mine = run.invoke(args=["keys", "list", "--user", "other@example.com"]).output
    assert data["masked_key"] in mine and "from-api" not in mine and owner["user"]["id"] not in mine
