"""The plugin contract, discovery through entry points, dependency order, activation.

A plugin is a plain `Plugin` object exported by an entry point in the group
`lunaos.plugins`; first-party plugins are registered the same way as third
parties'. `load()` reads and orders them without touching the app's routes;
`activate()` wires each one in, in dependency order.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

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

    def as_dict(self) -> dict[str, Any]:
        plugin = self.plugin
        return {
            "name": self.name,
            "version": plugin.version if plugin else self.version,
            "description": plugin.description if plugin else "",
            "status": self.status,
            "error": self.error,
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
        except Exception:
            fail(name, f"plugin {name!r} ({eps[0].value}, {dist}) failed to import:\n{traceback.format_exc()}", dist)
            continue
        if not isinstance(plugin, Plugin):
            fail(name, f"entry point {name!r} ({eps[0].value}) is a {type(plugin).__name__}, not an app.plugins.Plugin", dist)
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
        log.error("plugin skipped: %s", message.splitlines()[0])
    plugin_set = PluginSet(statuses=statuses, order=order)
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
    owners: dict[str, str] = {}
    for plugin in plugin_set.loaded:
        for key, value in plugin.config.items():
            if key in owners:
                raise PluginError(f"config key {key!r} is declared by both {owners[key]!r} and {plugin.name!r}")
            owners[key] = plugin.name
            app.config.setdefault(key, value)


def activate(app: Flask, plugin_set: PluginSet) -> None:
    """Wire each loaded plugin into the app, dependencies first."""
    from . import health, openapi, security

    strict = bool(app.config["PLUGINS_STRICT"])
    app.extensions["lunaos.plugins"] = plugin_set
    for plugin in plugin_set.loaded:
        status = plugin_set.statuses[plugin.name]
        broken = [d for d in plugin.requires if plugin_set.statuses[d].status != "loaded"]
        if broken:
            status.status, status.error = "failed", f"plugin {plugin.name!r} requires {broken[0]!r}, which failed to start"
            log.error("plugin skipped: %s", status.error)
            continue
        try:
            if plugin.models:
                importlib.import_module(plugin.models)
            security.register_scopes(app, dict(plugin.scopes), plugin.name)
            if plugin.init_app is not None:
                plugin.init_app(app)
            for blueprint in plugin.blueprints:
                openapi.register_blueprint(app, blueprint)
            for command in plugin.commands:
                if command.name in app.cli.commands:
                    raise PluginError(f"CLI command {command.name!r} is already registered")
                app.cli.add_command(command)
            if plugin.health is not None:
                health.register(app, plugin.name, plugin.health)
        except Exception as error:
            message = f"plugin {plugin.name!r} failed to start: {error}"
            if strict:
                raise PluginError(message + "\n" + traceback.format_exc()) from error
            status.status, status.error = "failed", message
            log.error("plugin skipped: %s", message)


def report(app: Flask) -> PluginSet:
    return app.extensions["lunaos.plugins"]


def active(app: Flask) -> list[Plugin]:
    """Plugins that loaded and started."""
    plugins = report(app)
    return [p for p in plugins.loaded if plugins.statuses[p.name].status == "loaded"]


def migration_dirs(app: Flask) -> list[str]:
    return [str(Path(p.migrations)) for p in active(app) if p.migrations]


def iter_statuses(app: Flask) -> Iterable[PluginStatus]:
    return sorted(report(app).statuses.values(), key=lambda s: s.name)
