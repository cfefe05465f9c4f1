"""The plugin contract, discovery through entry points, dependency order, activation.

A plugin is a plain `Plugin` object exported by an entry point in the group
`lunaos.plugins`; first-party plugins are registered the same way as third
parties'. `load()` reads and orders them without touching the app's routes;
`activate()` wires each one in, in dependency order.
"""
from __future__ import annotations

import copy
import importlib
import importlib.metadata as md
import logging
import os
import re
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask_smorest import Blueprint as SmorestBlueprint

ENTRY_POINT_GROUP = "lunaos.plugins"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
log = logging.getLogger("lunaos.plugins")


class PluginError(RuntimeError):
    """A plugin set that cannot start: the message names the plugin and what to do."""


@dataclass(frozen=True)
class Plugin:
    name: str
    version: str = "0.0.0"
    description: str = ""
    blueprint: SmorestBlueprint | Sequence[SmorestBlueprint] | None = None
    requires: tuple[str, ...] = ()
    scopes: Mapping[str, str] = field(default_factory=dict)
    models: str | None = None  # module imported before create_all / migrations
    migrations: str | None = None  # directory of alembic revisions (the plugin's own branch)
    cli: click.Command | Sequence[click.Command] | None = None
    config: Mapping[str, Any] = field(default_factory=dict)  # defaults; env / instance config override
    secrets: tuple[str, ...] = ()  # config keys refused in production when weak or missing
    init_app: Callable[[Flask], None] | None = None
    health: Callable[[], Any] | None = None  # -> "ok" | {"status": ..., "required": bool, ...}
    seed: Callable[[], Any] | None = None  # idempotent built-in data for `flask seed`; returns a summary

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise PluginError(f"plugin name {self.name!r} must match {_NAME.pattern}")
        if isinstance(self.requires, str):
            raise PluginError(f"plugin {self.name!r}: requires must be a tuple of names, not a string")
        for scope in self.scopes:
            if ":" not in scope:
                raise PluginError(f"plugin {self.name!r}: scope {scope!r} must look like 'area:action'")

    @property
    def blueprints(self) -> list[SmorestBlueprint]:
        if self.blueprint is None:
            return []
        if isinstance(self.blueprint, SmorestBlueprint):
            return [self.blueprint]
        return list(self.blueprint)

    @property
    def commands(self) -> list[click.Command]:
        if self.cli is None:
            return []
        return [self.cli] if isinstance(self.cli, click.Command) else list(self.cli)


@dataclass
class PluginStatus:
    name: str
    status: str  # "loaded", "failed", "disabled"
    distribution: str | None = None
    version: str | None = None
    error: str | None = None
    plugin: Plugin | None = None

    def as_dict(self, with_traceback: bool = False) -> dict[str, Any]:
        """`with_traceback=True` only for operators (CLI): GET /v1/plugins must not show a stack trace."""
        plugin = self.plugin
        error = self.error if with_traceback or not self.error else self.error.splitlines()[0]
        return {
            "name": self.name,
            "version": plugin.version if plugin else self.version,
            "description": plugin.description if plugin else "",
            "status": self.status,
            "error": error,
            "distribution": self.distribution,
            "requires": list(plugin.requires) if plugin else [],
            "scopes": dict(plugin.scopes) if plugin else {},
        }


@dataclass
class PluginSet:
    """What `load()` found: every candidate's status, and the loaded ones in order."""

    statuses: dict[str, PluginStatus]
    order: list[str]

    @property
    def loaded(self) -> list[Plugin]:
        return [self.statuses[name].plugin for name in self.order]  # type: ignore[misc]

    def config_defaults(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for plugin in self.loaded:
            merged.update(plugin.config)
        return merged

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for plugin in self.loaded for s in plugin.secrets)


def _distribution(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def discover() -> dict[str, list[md.EntryPoint]]:
    found: dict[str, list[md.EntryPoint]] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        # The same distribution can be visible twice (e.g. an editable install
        # plus a stale egg-info); that is one plugin, not a duplicate.
        known = found.setdefault(ep.name, [])
        if not any(other.value == ep.value and _distribution(other) == _distribution(ep) for other in known):
            known.append(ep)
    return found


def load(app: Flask, entry_points: dict[str, list[md.EntryPoint]] | None = None) -> PluginSet:
    """Discover, select, import and order the plugins. Raises PluginError when strict."""
    strict = bool(app.config["PLUGINS_STRICT"])
    candidates = discover() if entry_points is None else entry_points
    allow = app.config.get("PLUGINS")
    deny = set(app.config.get("DISABLED_PLUGINS") or [])
    statuses: dict[str, PluginStatus] = {}
    problems: list[str] = []

    def fail(name: str, message: str, dist: str | None = None) -> None:
        statuses[name] = PluginStatus(name, "failed", distribution=dist, error=message)
        problems.append(message)

    for setting, names in (("LUNAOS_PLUGINS", allow or []), ("LUNAOS_DISABLED_PLUGINS", deny)):
        unknown = sorted(set(names) - set(candidates))
        if unknown:
            raise PluginError(
                f"{setting} names {', '.join(map(repr, unknown))}, which is not installed "
                f"(installed: {', '.join(sorted(candidates)) or 'none'})"
            )

    for name in sorted(candidates):
        eps = candidates[name]
        dist = _distribution(eps[0])
        if allow is not None and name not in allow:
            statuses[name] = PluginStatus(name, "disabled", distribution=dist, error="not in LUNAOS_PLUGINS")
            continue
        if name in deny:
            statuses[name] = PluginStatus(name, "disabled", distribution=dist, error="in LUNAOS_DISABLED_PLUGINS")
            continue
        if len(eps) > 1:
            fail(name, f"plugin name {name!r} is provided twice: " + " and ".join(
                f"{ep.value} ({_distribution(ep)})" for ep in eps) + "; uninstall one of them", dist)
            continue
        try:
            plugin = eps[0].load()
        except Exception as error:
            # The cause goes on the first line: /health, `flask plugins list` and the log show only that.
            fail(name, f"plugin {name!r} ({eps[0].value}, {dist}) failed to import: {type(error).__name__}: "
                       f"{error}\n{traceback.format_exc()}", dist)
            continue
        if not isinstance(plugin, Plugin):
            fail(name, f"entry point {name!r} ({eps[0].value}) is a {type(plugin).__name__}, "
                       "not an app.plugins.Plugin", dist)
            continue
        if plugin.name != name:
            fail(name, f"entry point {name!r} exports a plugin named {plugin.name!r}; the two must match", dist)
            continue
        statuses[name] = PluginStatus(name, "loaded", distribution=dist, version=plugin.version, plugin=plugin)

    _check_dependencies(statuses, problems)
    order = _toposort(statuses, problems)
    if problems and strict:
        raise PluginError("plugins cannot start (set LUNAOS_PLUGINS_STRICT=false to skip failing ones):\n- "
                          + "\n- ".join(problems))
    for message in problems:
        log.error("plugin skipped: %s", message)  # with the traceback: the operator's only copy
    plugin_set = PluginSet(statuses=statuses, order=order)
    # Kept now (activate() keeps it again) so config.check() can tell a disabled plugin's settings from typos.
    app.extensions["lunaos.plugins"] = plugin_set
    _apply_config_defaults(app, plugin_set)
    return plugin_set


def _check_dependencies(statuses: dict[str, PluginStatus], problems: list[str]) -> None:
    # Repeat until stable: a plugin that loses a dependency may be another's dependency.
    changed = True
    while changed:
        changed = False
        for status in statuses.values():
            if status.status != "loaded":
                continue
            for dep in status.plugin.requires:  # type: ignore[union-attr]
                other = statuses.get(dep)
                if other is not None and other.status == "loaded":
                    continue
                why = ("is not installed" if other is None
                       else f"is disabled ({other.error})" if other.status == "disabled"
                       else "failed to load")
                message = f"plugin {status.name!r} requires {dep!r}, which {why}"
                status.status, status.error = "failed", message
                problems.append(message)
                changed = True
                break


def _toposort(statuses: dict[str, PluginStatus], problems: list[str]) -> list[str]:
    """Kahn's algorithm, alphabetical among equals so the order is reproducible."""
    pending = {n: set(s.plugin.requires) for n, s in statuses.items() if s.status == "loaded"}  # type: ignore[union-attr]
    order: list[str] = []
    while pending:
        ready = sorted(n for n, deps in pending.items() if not deps & set(pending))
        if not ready:
            cycle = _find_cycle(pending)
            message = "plugin dependency cycle: " + " -> ".join(cycle)
            for name in list(pending):
                statuses[name].status, statuses[name].error = "failed", message
            problems.append(message)
            break
        for name in ready:
            order.append(name)
            del pending[name]
    return order


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    start = sorted(graph)[0]
    path, seen = [start], {start: 0}
    while True:
        nxt = sorted(d for d in graph[path[-1]] if d in graph)[0]
        if nxt in seen:
            return path[seen[nxt]:] + [nxt]
        seen[nxt] = len(path)
        path.append(nxt)


def _apply_config_defaults(app: Flask, plugin_set: PluginSet) -> None:
    from .config import PREFIX

    declared = app.extensions.get("lunaos.config.declared", set())
    owners: dict[str, str] = {}
    for plugin in plugin_set.loaded:
        for key, value in plugin.config.items():
            if key in owners:
                raise PluginError(f"config key {key!r} is declared by both {owners[key]!r} and {plugin.name!r}")
            owners[key] = plugin.name
            default = copy.deepcopy(value)  # the Plugin object is shared by every app in the process
            current = app.config.get(key)
            if key not in app.config:
                app.config[key] = default
            elif (isinstance(default, dict) and isinstance(current, dict) and key not in declared
                  and f"{PREFIX}_{key}" not in os.environ
                  and any(name.startswith(f"{PREFIX}_{key}__") for name in os.environ)):
                # Only nested variables (LUNAOS_KEY__sub) set it, read before this default existed:
                # they refine the default, as they do for the core's settings, not replace it.
                app.config[key] = _merged(default, current)


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def activate(app: Flask, plugin_set: PluginSet) -> None:
    """Wire each loaded plugin into the app, dependencies first."""
    from . import health, openapi, security

    strict = bool(app.config["PLUGINS_STRICT"])
    app.extensions["lunaos.plugins"] = plugin_set
    for plugin in plugin_set.loaded:
        status = plugin_set.statuses[plugin.name]
        broken = [d for d in plugin.requires if plugin_set.statuses[d].status != "loaded"]
        if broken:
            status.status = "failed"
            status.error = f"plugin {plugin.name!r} requires {broken[0]!r}, which failed to start"
            log.error("plugin skipped: %s", status.error)
            continue
        try:
            if plugin.models:
                importlib.import_module(plugin.models)
            _check_conflicts(app, plugin)
            if plugin.init_app is not None:
                plugin.init_app(app)
            # Published only after init_app succeeded: a plugin skipped for failing to start
            # (not strict) must leave no scope a key could be granted, and no command.
            for blueprint in plugin.blueprints:
                openapi.register_blueprint(app, blueprint)
            security.register_scopes(app, dict(plugin.scopes), plugin.name)
            for command in plugin.commands:
                app.cli.add_command(command)
            if plugin.health is not None:
                health.register(app, plugin.name, plugin.health)
        except Exception as error:
            message = f"plugin {plugin.name!r} failed to start: {error}"
            if strict:
                raise PluginError(message + "\n" + traceback.format_exc()) from error
            status.status, status.error = "failed", message
            log.error("plugin skipped: %s", message)


def _check_conflicts(app: Flask, plugin: Plugin) -> None:
    """Clashes with plugins activated earlier, found before anything of this one is registered."""
    from . import security

    declared = security.registry(app).scopes
    for scope in plugin.scopes:
        owner = declared.get(scope, {}).get("plugin")
        if owner and owner != plugin.name:
            raise PluginError(f"scope {scope!r} is already declared by plugin {owner!r}")
    for command in plugin.commands:
        if command.name in app.cli.commands:
            raise PluginError(f"CLI command {command.name!r} is already registered")


def report(app: Flask) -> PluginSet:
    return app.extensions["lunaos.plugins"]


def active(app: Flask) -> list[Plugin]:
    """Plugins that loaded and started."""
    plugins = report(app)
    return [p for p in plugins.loaded if plugins.statuses[p.name].status == "loaded"]


def migration_dirs(app: Flask) -> list[str]:
    """Alembic version directories of every installed plugin that can be read, not only the active ones.

    A plugin disabled after its migrations ran still has its revision in alembic_version;
    without its scripts alembic cannot read the database's state, and every `flask db`
    command (so `make run`, which migrates first) would fail. Its branch is kept up to date.
    """
    dirs: list[str] = []
    statuses = list(iter_statuses(app))
    found = discover() if any(s.status == "disabled" for s in statuses) else {}
    for status in statuses:
        plugin = status.plugin
        if plugin is None and status.status == "disabled" and len(found.get(status.name, ())) == 1:
            try:
                plugin = found[status.name][0].load()  # a plain object: importing it starts nothing
            except Exception as error:
                log.warning("cannot read the migrations of disabled plugin %r: %s", status.name, error)
                continue
        if isinstance(plugin, Plugin) and plugin.migrations:
            dirs.append(str(Path(plugin.migrations)))
    return dirs


def iter_statuses(app: Flask) -> Iterable[PluginStatus]:
    return sorted(report(app).statuses.values(), key=lambda s: s.name)
