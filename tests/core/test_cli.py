"""The real `flask` command, run as a user runs it: a subprocess with FLASK_APP=wsgi.

Each test gets its own instance directory and SQLite file. PYTHONPATH is
inherited, so the pip-installed sample plugin (see tests/support) is found
through its entry point exactly as an installed distribution would be.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.plugin_cases import write_distribution
from tests.support import sample_plugin

ROOT = Path(__file__).resolve().parent.parent.parent
FLASK = Path(sys.executable).parent / "flask"
SAMPLE_REVISION = "sample_0001"  # tests/fixtures/sample_plugin/lunaos_sample/migrations


class Cli:
    def __init__(self, instance: Path):
        self.instance = instance
        self.database = instance / "cli.db"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LUNAOS_") and k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
        env.update(FLASK_APP="wsgi", LUNAOS_INSTANCE_PATH=str(instance),
                   LUNAOS_DATABASE_URL=f"sqlite:///{self.database}")
        self.env = env

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(FLASK), *args], cwd=ROOT, env={**self.env, **env},
                              capture_output=True, text=True, timeout=600)

    def with_broken_plugin(self, tmp_path: Path) -> dict[str, str]:
        """Env that also "installs" a distribution whose plugin fails to import."""
        dist = write_distribution(tmp_path / "broken-dist", "lunaos-case-broken",
                                  {"broken": "tests.core.plugin_cases.broken:plugin"})
        return {"PYTHONPATH": os.pathsep.join(filter(None, (str(dist), self.env.get("PYTHONPATH"))))}


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path / "instance")


def test_plugins_list_prints_a_table(cli):
    result = cli("plugins", "list")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "VERSION", "STATUS", "REQUIRES", "SCOPES"]
    sample = next(row.split() for row in rows if row.startswith("sample "))
    assert sample == ["sample", "0.1.0", "loaded", "-", "sample:read,sample:write"]


def test_plugins_list_json(cli):
    result = cli("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    sample = {row["name"]: row for row in json.loads(result.stdout)}["sample"]
    assert sample["status"] == "loaded"
    assert sample["version"] == "0.1.0"
    assert sample["distribution"] == "lunaos-sample-plugin 0.1.0"
    assert sample["scopes"] == {"sample:read": "List and read your notes", "sample:write": "Create notes"}


def test_plugins_check_exit_codes(cli, tmp_path):
    ok = cli("plugins", "check")
    assert ok.returncode == 0, ok.stderr
    assert "all selected plugins loaded" in ok.stdout

    broken = cli.with_broken_plugin(tmp_path)
    relaxed = cli("plugins", "check", LUNAOS_PLUGINS_STRICT="false", **broken)
    assert relaxed.returncode == 1
    assert "broken: plugin 'broken'" in relaxed.stderr
    assert "No module named 'lunaos_case_dependency_that_is_not_installed'" in relaxed.stderr
    listed = cli("plugins", "list", LUNAOS_PLUGINS_STRICT="false", **broken)
    assert listed.returncode == 0, listed.stderr
    row = next(row.split() for row in listed.stdout.splitlines() if row.startswith("broken "))
    assert row[:3] == ["broken", "-", "failed"]

    # Strict (the default): the app does not start at all, and says which plugin and why.
    strict = cli("plugins", "check", **broken)
    assert strict.returncode != 0
    assert "plugin 'broken'" in strict.stderr and "Traceback" in strict.stderr
    assert "LUNAOS_PLUGINS_STRICT=false" in strict.stderr


def test_sample_hello_prints_the_configured_greeting(cli):
    default = cli("sample", "hello")
    assert default.returncode == 0, default.stderr
    assert default.stdout == "hello from sample\n"
    configured = cli("sample", "hello", LUNAOS_SAMPLE_GREETING="hi from the environment")
    assert configured.returncode == 0, configured.stderr
    assert configured.stdout == "hi from the environment\n"


def test_help_lists_the_core_and_plugin_groups(cli):
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    commands = {line.split()[0] for line in result.stdout.split("Commands:", 1)[1].splitlines() if line.strip()}
    assert {"db", "plugins", "sample"} <= commands


def test_a_disabled_plugin_has_no_command(cli):
    env = {"LUNAOS_DISABLED_PLUGINS": "sample"}
    hello = cli("sample", "hello", **env)
    assert hello.returncode == 2
    assert "No such command 'sample'" in hello.stderr
    listed = cli("--help", **env).stdout.split("Commands:", 1)[1]
    assert "sample" not in {line.split()[0] for line in listed.splitlines() if line.strip()}
    row = next(r.split() for r in cli("plugins", "list", **env).stdout.splitlines() if r.startswith("sample "))
    assert row[2] == "disabled"


def test_db_upgrade_heads_builds_a_fresh_sqlite_database(cli):
    assert not cli.database.exists()
    result = cli("db", "upgrade", "heads")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(cli.database) as conn:
        columns = {row[1]: row for row in conn.execute("PRAGMA table_info(sample_notes)")}
        versions = {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(sample_notes)")}
    assert set(columns) == {"id", "owner_id", "text", "created_at"}
    assert columns["id"][5] == 1  # the primary key
    assert "ix_sample_notes_owner_id" in indexes
    assert SAMPLE_REVISION in versions  # the plugin's own branch head

    heads = cli("db", "heads")
    assert f"{SAMPLE_REVISION} (sample) (head)" in heads.stdout
    again = cli("db", "upgrade", "heads")  # already up to date: a no-op, not an error
    assert again.returncode == 0, again.stderr


def test_db_upgrade_heads_finds_a_plugin_installed_under_a_path_with_spaces(cli, tmp_path):
    installed = sample_plugin.ensure_installed()
    spaced = tmp_path / "Jane Doe" / "site packages"
    shutil.copytree(installed, spaced)
    others = [p for p in cli.env["PYTHONPATH"].split(os.pathsep) if p and p != str(installed)]
    result = cli("db", "upgrade", "heads", PYTHONPATH=os.pathsep.join([str(spaced), *others]))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(cli.database) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sample_notes'").fetchone() == (1,)
        assert SAMPLE_REVISION in {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}


def test_disabling_a_migrated_plugin_keeps_flask_db_working(cli):
    assert cli("db", "upgrade", "heads").returncode == 0
    with sqlite3.connect(cli.database) as conn:
        conn.execute("INSERT INTO sample_notes (id, owner_id, text, created_at) "
                     "VALUES ('note_kept', 'usr_a', 'still here', '2024-01-01 00:00:00')")
    # Its revision stays recorded in alembic_version; alembic must still find its script,
    # or every later `flask db upgrade heads` (and so `make run`) fails.
    disabled = {"LUNAOS_DISABLED_PLUGINS": "sample"}
    upgrade = cli("db", "upgrade", "heads", **disabled)
    assert upgrade.returncode == 0, upgrade.stderr
    current = cli("db", "current", **disabled)
    assert current.returncode == 0, current.stderr
    assert SAMPLE_REVISION in current.stdout
    with sqlite3.connect(cli.database) as conn:
        assert conn.execute("SELECT text FROM sample_notes").fetchall() == [("still here",)]
