"""`flask users ...`: the real command (subprocess, FLASK_APP=wsgi) on a migrated SQLite database.

Each `flask` start-up costs over a second of CPU, so the subprocess runs cover what an operator
does; the error paths run the same click commands in-process (`app.test_cli_runner()`).
"""
from __future__ import annotations

import pytest

from tests.support.identity import PASSWORD, FlaskCli, bearer, create_user, error_of, login, login_ok


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    cli = FlaskCli(tmp_path_factory.mktemp("users-cli"))
    cli.migrate()  # the real `flask db upgrade heads`
    yield cli
    cli.close()


@pytest.mark.slow
def test_users_help_is_useful(cli):
    result = cli.run("users", "--help")
    assert result.returncode == 0
    assert "account" in result.stdout.lower()
    for command in ("create", "list", "set-tier", "disable"):
        assert command in result.stdout


@pytest.mark.slow
def test_users_lifecycle(cli):
    created, weak = cli.run_all(
        (("users", "create", "Root@Example.com", "--admin", "--password-stdin"), PASSWORD + "\n"),
        (("users", "create", "weakling@example.com", "--password-stdin"), "password\n"),
    )
    assert created.returncode == 0, created.stderr
    assert "root@example.com" in created.stdout and "role=admin" in created.stdout
    assert PASSWORD not in created.stdout + created.stderr
    # A weak password: refused with the policy's words, non-zero exit, nothing created.
    assert weak.returncode != 0
    assert "password policy" in weak.stderr and "at least 10 characters" in weak.stderr
    assert "Traceback" not in weak.stderr

    app = cli.app()
    client = app.test_client()
    create_user(app, "member@example.com")
    admin = login_ok(client, "root@example.com")
    assert admin["user"]["role"] == "admin"
    assert client.get("/v1/admin/users", headers=bearer(admin)).status_code == 200

    listed = cli.run("users", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line.split() for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert set(rows) == {"root@example.com", "member@example.com"}
    assert rows["root@example.com"][2:4] == ["admin", "free"]
    assert rows["member@example.com"][2:4] == ["user", "free"]

    tiered = cli.run("users", "set-tier", "member@example.com", "pro")
    assert tiered.returncode == 0, tiered.stderr
    member = login_ok(client, "member@example.com")
    assert member["user"]["tier"] == "pro"
    assert client.get("/v1/auth/me", headers=bearer(member)).headers["X-RateLimit-Limit"] == "600"

    disabled = cli.run("users", "disable", "member@example.com")
    assert disabled.returncode == 0, disabled.stderr
    error_of(login(client, "member@example.com"), 401, "INVALID_CREDENTIALS")
    error_of(client.get("/v1/auth/me", headers=bearer(member)), 401, "ACCOUNT_DISABLED")


@pytest.fixture
def runner(make_app):
    app = make_app()
    return app, app.test_cli_runner()


def test_cli_errors_are_messages_with_a_non_zero_exit(runner):
    app, run = runner
    ok = run.invoke(args=["users", "create", "boss@example.com", "--admin", "--password-stdin"], input=PASSWORD)
    assert ok.exit_code == 0, ok.output
    cases = [
        (["users", "create", "not-an-email", "--password-stdin"], PASSWORD, "email"),
        (["users", "create", "BOSS@example.com", "--password-stdin"], PASSWORD, "already exists"),
        (["users", "create", "patricia@example.com", "--password-stdin"], "Patricia-is-great-1", "email"),
        (["users", "set-tier", "ghost@example.com", "pro"], None, "ghost@example.com"),
        (["users", "set-tier", "boss@example.com", "platinum"], None, "platinum"),
        (["users", "disable", "ghost@example.com"], None, "ghost@example.com"),
        (["users", "disable", "boss@example.com"], None, "last"),  # the only admin
    ]
    for args, stdin, expected in cases:
        result = run.invoke(args=args, input=stdin)
        assert result.exit_code != 0, (args, result.output)
        assert expected.lower() in result.output.lower(), (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    listed = run.invoke(args=["users", "list"])
    assert "patricia@example.com" not in listed.output and "disabled" not in listed.output


def test_enable_restores_a_disabled_account(runner):
    app, run = runner
    create_user(app, "root@example.com", role="admin")
    create_user(app, "member@example.com")
    client = app.test_client()
    assert run.invoke(args=["users", "disable", "member@example.com"]).exit_code == 0
    error_of(login(client, "member@example.com"), 401, "INVALID_CREDENTIALS")
    assert run.invoke(args=["users", "enable", "member@example.com"]).exit_code == 0
    login_ok(client, "member@example.com")


def test_list_can_search(runner):
    app, run = runner
    create_user(app, "alpha@example.com")
    create_user(app, "beta@example.com")
    result = run.invoke(args=["users", "list", "--search", "ALPHA"])
    assert "alpha@example.com" in result.output and "beta@example.com" not in result.output
