"""Plugins: the real third-party sample distribution end to end, and the loader's rules.

The sample plugin (tests/fixtures/sample_plugin) is pip-installed for the
session by tests/support/sample_plugin.py and found through its entry point,
like any distribution a user installs. The loader rules use small plugins in
tests/core/plugin_cases, handed to `app.plugins.load` as synthetic entry points.
"""
from __future__ import annotations

import importlib.metadata as md
import itertools
from pathlib import Path

import pytest
from flask import Flask

from app import create_app, plugins
from app.config import ConfigError
from app.plugins import Plugin, PluginError
from app.security import registry
from tests.core.plugin_cases import GROUP, basic, write_distribution

CASES = "tests.core.plugin_cases"
SAMPLE_SCOPES = {"sample:read", "sample:write"}


def entry_points(**targets: str) -> dict[str, list[md.EntryPoint]]:
    """`alpha="basic:alpha"` -> {"alpha": [EntryPoint("alpha", "tests.core.plugin_cases.basic:alpha")]}."""
    return {name: [md.EntryPoint(name=name, value=f"{CASES}.{target}", group=GROUP)]
            for name, target in targets.items()}


def bare_app(**config) -> Flask:
    """Just what `load()` reads; no database, no routes."""
    app = Flask("plugin-loader-test")
    app.config.update({"PLUGINS_STRICT": True, "PLUGINS": None, "DISABLED_PLUGINS": [], **config})
    return app


def use_entry_points(monkeypatch: pytest.MonkeyPatch, found: dict[str, list[md.EntryPoint]]) -> None:
    """Make create_app discover exactly these plugins (and not the installed ones)."""
    monkeypatch.setattr(plugins, "discover", lambda: found)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the real sample distribution -------------------------------------------------------------

def test_sample_distribution_is_discovered_through_its_entry_point():
    found = plugins.discover()["sample"]
    assert len(found) == 1
    assert found[0].value == "lunaos_sample:plugin"
    assert found[0].dist.name == "lunaos-sample-plugin"
    assert isinstance(found[0].load(), Plugin)


def test_sample_plugin_is_loaded_with_its_config_health_and_cli(app):
    status = plugins.report(app).statuses["sample"]
    assert status.status == "loaded"
    assert status.distribution == "lunaos-sample-plugin 0.1.0"
    assert app.config["SAMPLE_GREETING"] == "hello from sample"
    assert "sample" in app.cli.commands
    result = app.test_cli_runner().invoke(args=["sample", "hello"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello from sample"
    health = app.test_client().get("/health").json
    assert health["plugins"]["sample"] == "loaded"
    assert health["services"]["sample"] == "ok"


def test_sample_routes_are_in_the_openapi_spec_with_their_scopes(client):
    spec = client.get("/openapi.json").json
    notes, note = spec["paths"]["/v1/sample/notes"], spec["paths"]["/v1/sample/notes/{note_id}"]
    for operation, scope in ((notes["get"], "sample:read"), (notes["post"], "sample:write"),
                             (note["get"], "sample:read")):
        assert operation["security"] == [{"bearerAuth": [scope]}, {"apiKeyAuth": [scope]}]
        assert operation["x-required-scopes"] == [scope]
        assert {"401", "403"} <= set(operation["responses"])
    assert "201" in notes["post"]["responses"]
    body = notes["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    text = spec["components"]["schemas"][body]["properties"]["text"]
    assert (text["minLength"], text["maxLength"]) == (1, 500)
    assert {p["name"] for p in notes["get"]["parameters"]} >= {"page", "per_page"}


def test_sample_scopes_are_registered_and_listed_by_the_plugins_route(app, principal_token):
    declared = registry(app).scopes
    assert {s for s, info in declared.items() if info["plugin"] == "sample"} == SAMPLE_SCOPES
    client = app.test_client()
    assert client.get("/v1/plugins").status_code == 401
    response = client.get("/v1/plugins", headers=auth(principal_token(app)))
    assert response.status_code == 200
    sample = {p["name"]: p for p in response.json["data"]}["sample"]
    assert sample["status"] == "loaded"
    assert sample["version"] == "0.1.0"
    assert sample["distribution"] == "lunaos-sample-plugin 0.1.0"
    assert set(sample["scopes"]) == SAMPLE_SCOPES
    assert sample["error"] is None


@pytest.mark.db
def test_sample_notes_end_to_end(make_app, principal_token, backend):
    app = make_app()
    token = principal_token(app, "writer", id="usr_writer", scopes=["sample:read", "sample:write"])
    client = app.test_client()

    created = [client.post("/v1/sample/notes", json={"text": f"note {i}"}, headers=auth(token)) for i in range(3)]
    assert [r.status_code for r in created] == [201, 201, 201]
    first = created[0].json["data"]
    assert first["id"].startswith("note_") and first["text"] == "note 0"
    assert first["created_at"].endswith("Z")

    page1 = client.get("/v1/sample/notes?per_page=2", headers=auth(token))
    assert page1.status_code == 200
    assert [n["text"] for n in page1.json["data"]] == ["note 2", "note 1"]  # newest first
    assert page1.json["pagination"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2,
                                        "has_next": True, "has_prev": False}
    page2 = client.get("/v1/sample/notes?per_page=2&page=2", headers=auth(token))
    assert [n["text"] for n in page2.json["data"]] == ["note 0"]

    one = client.get(f"/v1/sample/notes/{first['id']}", headers=auth(token))
    assert one.status_code == 200 and one.json == {"data": first}


@pytest.mark.db
@pytest.mark.parametrize("text", ["", "x" * 501])
def test_sample_note_text_is_validated(make_app, principal_token, backend, text):
    app = make_app()
    token = principal_token(app, scopes=["sample:read", "sample:write"])
    response = app.test_client().post("/v1/sample/notes", json={"text": text}, headers=auth(token))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "VALIDATION_ERROR"
    assert "text" in response.json["error"]["details"]["fields"]


def test_sample_routes_need_a_credential_and_the_right_scope(make_app, principal_token):
    app = make_app()
    reader = principal_token(app, "reader", id="usr_reader", scopes=["sample:read"])
    client = app.test_client()
    assert client.get("/v1/sample/notes").status_code == 401
    denied = client.post("/v1/sample/notes", json={"text": "hi"}, headers=auth(reader))
    assert denied.status_code == 403
    assert denied.json["error"]["details"]["required_scope"] == "sample:write"
    assert client.get("/v1/sample/notes", headers=auth(reader)).status_code == 200


@pytest.mark.db
def test_a_note_is_visible_to_its_owner_only(make_app, principal_token, backend):
    app = make_app()
    scopes = ["sample:read", "sample:write"]
    alice = principal_token(app, "alice", id="usr_alice", scopes=scopes)
    bob = principal_token(app, "bob", id="usr_bob", scopes=scopes)
    client = app.test_client()
    note_id = client.post("/v1/sample/notes", json={"text": "alice's"}, headers=auth(alice)).json["data"]["id"]

    stolen = client.get(f"/v1/sample/notes/{note_id}", headers=auth(bob))
    unknown = client.get("/v1/sample/notes/note_00000000000000000000000000", headers=auth(bob))
    # Another's note and a made-up id are indistinguishable.
    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json["error"]["code"] == unknown.json["error"]["code"] == "NOT_FOUND"
    assert client.get("/v1/sample/notes", headers=auth(bob)).json["data"] == []
    assert client.get("/v1/sample/notes", headers=auth(alice)).json["pagination"]["total"] == 1


@pytest.fixture
def other_distribution(make_app, tmp_path, monkeypatch):
    """A second installed distribution (plugin "delta"), so an allow-list can leave sample out.

    Depends on make_app so the session schema is built before it is on sys.path.
    """
    write_distribution(tmp_path, "lunaos-case-delta", {"delta": f"{CASES}.basic:delta"})
    monkeypatch.syspath_prepend(str(tmp_path))
    return "delta"


@pytest.mark.parametrize("how", ["DISABLED_PLUGINS override", "LUNAOS_DISABLED_PLUGINS env", "PLUGINS allow-list"])
def test_disabling_the_sample_plugin_removes_routes_spec_scopes_and_cli(
        how, make_app, principal_token, monkeypatch, request):
    if how == "DISABLED_PLUGINS override":
        app = make_app(DISABLED_PLUGINS=["sample"])
    elif how == "LUNAOS_DISABLED_PLUGINS env":
        monkeypatch.setenv("LUNAOS_DISABLED_PLUGINS", "sample")
        app = make_app()
    else:
        other = request.getfixturevalue("other_distribution")
        app = make_app(PLUGINS=[other])
        assert plugins.report(app).statuses[other].status == "loaded"
    token = principal_token(app, scopes=["*"])
    client = app.test_client()

    for path in ("/v1/sample/notes", "/v1/sample/notes/note_x"):
        response = client.get(path, headers=auth(token))
        assert response.status_code == 404
        assert response.json["error"]["code"] == "NOT_FOUND"
    spec = client.get("/openapi.json").json
    assert not [p for p in spec["paths"] if p.startswith("/v1/sample")]
    assert not SAMPLE_SCOPES & set(registry(app).scopes)
    listed = {p["name"]: p for p in client.get("/v1/plugins", headers=auth(token)).json["data"]}
    assert listed["sample"]["status"] == "disabled"
    assert listed["sample"]["scopes"] == {}
    assert "sample" not in client.get("/health").json["plugins"]
    assert "sample" not in app.cli.commands
    assert app.test_cli_runner().invoke(args=["sample", "hello"]).exit_code == 2  # "No such command"


# --- loader rules with synthetic entry points -------------------------------------------------

def test_duplicate_plugin_names_fail_naming_both_providers():
    found = {"alpha": entry_points(alpha="basic:alpha")["alpha"]
             + [md.EntryPoint(name="alpha", value="someone.elses:plugin", group=GROUP)]}
    with pytest.raises(PluginError) as error:
        plugins.load(bare_app(), found)
    message = str(error.value)
    assert "'alpha' is provided twice" in message
    assert f"{CASES}.basic:alpha" in message and "someone.elses:plugin" in message


def test_two_installed_distributions_with_one_plugin_name_fail_start_up(make_app, tmp_path, monkeypatch):
    for dist in ("lunaos-case-one", "lunaos-case-two"):
        write_distribution(tmp_path / dist, dist, {"delta": f"{CASES}.basic:delta"})
        monkeypatch.syspath_prepend(str(tmp_path / dist))
    assert len(plugins.discover()["delta"]) == 2
    with pytest.raises(PluginError) as error:
        make_app()
    assert "lunaos-case-one 0.1.0" in str(error.value) and "lunaos-case-two 0.1.0" in str(error.value)


def test_a_dependency_cycle_fails_showing_the_cycle():
    found = entry_points(cyc_a="basic:cyc_a", cyc_b="basic:cyc_b", cyc_c="basic:cyc_c", delta="basic:delta")
    with pytest.raises(PluginError, match="plugin dependency cycle: cyc_a -> cyc_b -> cyc_c -> cyc_a"):
        plugins.load(bare_app(), found)
    relaxed = plugins.load(bare_app(PLUGINS_STRICT=False), found)
    assert relaxed.order == ["delta"]
    assert {relaxed.statuses[n].status for n in ("cyc_a", "cyc_b", "cyc_c")} == {"failed"}


def test_a_missing_dependency_fails_naming_plugin_and_dependency():
    found = entry_points(beta="basic:beta", gamma="basic:gamma", delta="basic:delta")
    with pytest.raises(PluginError, match="plugin 'beta' requires 'alpha', which is not installed"):
        plugins.load(bare_app(), found)
    relaxed = plugins.load(bare_app(PLUGINS_STRICT=False), found)
    # gamma needs beta: losing beta takes gamma down too, with its own reason.
    assert relaxed.order == ["delta"]
    assert relaxed.statuses["gamma"].error == "plugin 'gamma' requires 'beta', which failed to load"


def test_a_disabled_dependency_fails_naming_the_setting():
    found = entry_points(alpha="basic:alpha", beta="basic:beta")
    with pytest.raises(PluginError, match=r"plugin 'beta' requires 'alpha', which is disabled \(in LUNAOS_DISABLED"):
        plugins.load(bare_app(DISABLED_PLUGINS=["alpha"]), found)
    with pytest.raises(PluginError, match=r"requires 'alpha', which is disabled \(not in LUNAOS_PLUGINS\)"):
        plugins.load(bare_app(PLUGINS=["beta"]), found)


def test_an_import_error_fails_start_up_with_the_plugin_name_and_traceback(monkeypatch, make_app):
    use_entry_points(monkeypatch, entry_points(broken="broken:plugin", alpha="basic:alpha"))
    with pytest.raises(PluginError) as error:
        make_app()
    message = str(error.value)
    assert "plugin 'broken'" in message
    assert "Traceback (most recent call last)" in message
    assert "No module named 'lunaos_case_dependency_that_is_not_installed'" in message


def test_an_import_error_when_not_strict_is_skipped_and_reported(monkeypatch, make_app, principal_token):
    use_entry_points(monkeypatch, entry_points(broken="broken:plugin", alpha="basic:alpha"))
    app = make_app(PLUGINS_STRICT=False)
    token = principal_token(app, scopes=["alpha:read"])
    client = app.test_client()
    assert client.get("/v1/alpha/ping", headers=auth(token)).json == {"pong": True}  # the others still work

    health = client.get("/health").json["plugins"]
    assert health["alpha"] == "loaded"
    assert health["broken"].startswith("failed: plugin 'broken'")
    assert "ModuleNotFoundError" in health["broken"]

    listed = {p["name"]: p for p in client.get("/v1/plugins", headers=auth(token)).json["data"]}
    assert listed["broken"]["status"] == "failed"
    assert "lunaos_case_dependency_that_is_not_installed" in listed["broken"]["error"]
    assert "Traceback" not in listed["broken"]["error"]  # no stack trace reaches a client

    table = app.test_cli_runner().invoke(args=["plugins", "list"])
    assert table.exit_code == 0
    row = next(line for line in table.output.splitlines() if line.startswith("broken "))
    assert "failed" in row
    assert "ModuleNotFoundError" in table.output
    assert app.test_cli_runner().invoke(args=["plugins", "check"]).exit_code == 1


def test_an_entry_point_that_is_not_a_plugin_fails():
    with pytest.raises(PluginError, match=r"entry point 'alpha' .* is a dict, not an app.plugins.Plugin"):
        plugins.load(bare_app(), entry_points(alpha="basic:not_a_plugin"))


def test_an_entry_point_name_must_match_the_plugin_name():
    with pytest.raises(PluginError, match="entry point 'alpha' exports a plugin named 'someone_else'"):
        plugins.load(bare_app(), entry_points(alpha="basic:misnamed"))


@pytest.mark.parametrize("setting, config", [("LUNAOS_PLUGINS", {"PLUGINS": ["alpha", "alpah"]}),
                                             ("LUNAOS_DISABLED_PLUGINS", {"DISABLED_PLUGINS": ["alpah"]})])
def test_an_unknown_name_in_the_allow_or_deny_list_fails(setting, config):
    # Even when not strict: a typo here would silently serve (or hide) the wrong plugins.
    app = bare_app(**{**config, "PLUGINS_STRICT": False})
    with pytest.raises(PluginError, match=rf"{setting} names 'alpah', which is not installed \(installed: alpha\)"):
        plugins.load(app, entry_points(alpha="basic:alpha"))


def test_plugins_load_in_a_reproducible_dependency_order():
    targets = {"alpha": "basic:alpha", "beta": "basic:beta", "gamma": "basic:gamma",
               "delta": "basic:delta", "epsilon": "basic:epsilon"}
    orders = set()
    for names in itertools.permutations(targets):
        orders.add(tuple(plugins.load(bare_app(), entry_points(**{n: targets[n] for n in names})).order))
    assert orders == {("alpha", "delta", "beta", "epsilon", "gamma")}


def test_plugin_config_defaults_are_overridable_by_env(monkeypatch, make_app):
    use_entry_points(monkeypatch, entry_points(alpha="basic:alpha"))
    first = make_app().config
    assert (first["ALPHA_LIMIT"], first["ALPHA_TIERS"]) == (10, {"free": 1})
    first["ALPHA_TIERS"]["free"] = 99  # one app changing its copy...
    assert basic.alpha.config["ALPHA_TIERS"] == {"free": 1}  # ...leaves the shared declaration alone

    monkeypatch.setenv("LUNAOS_ALPHA_LIMIT", "25")
    monkeypatch.setenv("LUNAOS_ALPHA_TIERS__pro", "5")
    app = make_app()
    assert app.config["ALPHA_LIMIT"] == 25  # JSON-decoded, like every LUNAOS_ value
    # A nested variable refines the plugin's default dict, as it does for the core's settings.
    assert app.config["ALPHA_TIERS"] == {"free": 1, "pro": 5}
    monkeypatch.delenv("LUNAOS_ALPHA_TIERS__pro")
    monkeypatch.setenv("LUNAOS_ALPHA_TIERS", '{"team": 3}')  # the whole value replaces the default
    assert make_app().config["ALPHA_TIERS"] == {"team": 3}
    monkeypatch.setenv("LUNAOS_ALPHA_LIMIT", '"lots"')
    with pytest.raises(ConfigError, match="LUNAOS_ALPHA_LIMIT: expected int"):
        make_app()


def test_a_dependent_of_a_plugin_that_failed_to_start_is_skipped(monkeypatch, make_app, principal_token):
    use_entry_points(monkeypatch, entry_points(flaky="flaky:flaky", dependent="flaky:dependent",
                                               alpha="basic:alpha"))
    app = make_app(PLUGINS_STRICT=False)
    statuses = plugins.report(app).statuses
    assert statuses["flaky"].status == "failed"
    assert "cannot reach the flux capacitor" in statuses["flaky"].error
    assert statuses["dependent"].status == "failed"
    assert statuses["dependent"].error == "plugin 'dependent' requires 'flaky', which failed to start"
    assert statuses["alpha"].status == "loaded"
    assert [p.name for p in plugins.active(app)] == ["alpha"]

    token = principal_token(app, scopes=["*"])
    client = app.test_client()
    assert client.get("/v1/flaky/ping", headers=auth(token)).status_code == 404
    assert client.get("/v1/dependent/ping", headers=auth(token)).status_code == 404
    # Nothing of a plugin that did not start stays behind: no scope a key could be granted,
    # no command, no health check.
    assert set(registry(app).scopes) & {"flaky:use", "dependent:use"} == set()
    assert "flaky" not in app.cli.commands
    assert "flaky" not in client.get("/health").json["services"]


def test_a_plugin_that_fails_to_start_fails_start_up_when_strict(monkeypatch, make_app):
    use_entry_points(monkeypatch, entry_points(flaky="flaky:flaky", dependent="flaky:dependent"))
    with pytest.raises(PluginError, match="plugin 'flaky' failed to start: cannot reach the flux capacitor"):
        make_app()


def test_plugin_contract_mistakes_fail_when_the_plugin_is_defined():
    with pytest.raises(PluginError, match="must match"):
        Plugin(name="Bad-Name")
    with pytest.raises(PluginError, match="requires must be a tuple"):
        Plugin(name="ok", requires="auth")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="scope 'read' must look like 'area:action'"):
        Plugin(name="ok", scopes={"read": "Read"})


def test_create_app_without_plugins_serves_the_core(monkeypatch, tmp_path):
    use_entry_points(monkeypatch, {})
    monkeypatch.setenv("LUNAOS_INSTANCE_PATH", str(tmp_path))
    app = create_app({"DATABASE_URL": f"sqlite:///{Path(tmp_path) / 'empty.db'}"})
    assert plugins.report(app).order == []
    assert app.test_client().get("/").json["status"] == "ok"
