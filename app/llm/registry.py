"""Provider kinds by name: the built-ins, kinds registered in code, and the `lunaos.llm_providers` entry points.

A kind is a `Provider` subclass; `LLM_PROVIDERS` entries name one in `type`.
Built-ins are named by import path so that no SDK is imported before a
provider of that kind is configured. A plugin registers a kind when its
module is imported (plugins are imported before the LLM layer is set up):

    from app import llm
    llm.register_kind("mycloud", MyCloudProvider)

or a distribution ships an entry point:

    [project.entry-points."lunaos.llm_providers"]
    mycloud = "mycloud_lunaos:MyCloudProvider"
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import threading

from ..config import ConfigError
from .base import Provider

ENTRY_POINT_GROUP = "lunaos.llm_providers"
BUILTIN = {
    "openai": "app.llm.providers.openai_compat:OpenAIProvider",
    "anthropic": "app.llm.providers.anthropic:AnthropicProvider",
    "llamacpp": "app.llm.providers.llamacpp:LlamaCppProvider",
}
_registered: dict[str, type[Provider]] = {}
_lock = threading.Lock()


def register_kind(kind: str, cls: type[Provider], *, replace: bool = False) -> None:
    """Make `cls` the provider kind `kind`. Registering a taken name is an error unless `replace`."""
    if not isinstance(cls, type) or not issubclass(cls, Provider):
        raise TypeError(f"LLM provider kind {kind!r}: {cls!r} is not a subclass of app.llm.Provider")
    if not kind or not isinstance(kind, str):
        raise ValueError("an LLM provider kind needs a non-empty name")
    with _lock:
        if not replace and (kind in BUILTIN or kind in _registered) and _registered.get(kind) is not cls:
            raise ValueError(f"LLM provider kind {kind!r} is already registered; pass replace=True to override it")
        _registered[kind] = cls


def unregister_kind(kind: str) -> None:
    with _lock:
        _registered.pop(kind, None)


def entry_points() -> dict[str, list[md.EntryPoint]]:
    found: dict[str, list[md.EntryPoint]] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def _describe(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    origin = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ENTRY_POINT_GROUP}:{ep.name} = {ep.value!r}{origin}"


def _load_entry_point(kind: str, candidates: list[md.EntryPoint]) -> type[Provider]:
    # Two distributions offering one kind would make the choice depend on install order.
    values = {ep.value for ep in candidates}
    if len(values) > 1:
        raise ConfigError(f"LLM provider kind {kind!r} is offered by several entry points: "
                          + "; ".join(_describe(ep) for ep in candidates))
    ep = candidates[0]
    try:
        loaded = ep.load()
    except Exception as error:
        raise ConfigError(f"LLM provider kind {kind!r}: {_describe(ep)} failed to load: "
                          f"{type(error).__name__}: {error}") from error
    if not isinstance(loaded, type) or not issubclass(loaded, Provider):
        raise ConfigError(f"LLM provider kind {kind!r}: {_describe(ep)} is {loaded!r}, "
                          "not a subclass of app.llm.Provider")
    return loaded


def resolve(kind: str) -> type[Provider]:
    """The class of provider kind `kind`; ConfigError (naming it and what exists) when none."""
    with _lock:
        if kind in _registered:
            return _registered[kind]
    if kind in BUILTIN:
        module_name, _, attr = BUILTIN[kind].partition(":")
        return getattr(importlib.import_module(module_name), attr)
    candidates = entry_points().get(kind)
    if not candidates:
        raise ConfigError(f"unknown provider type {kind!r}; known types: {', '.join(known_kinds())}")
    cls = _load_entry_point(kind, candidates)
    with _lock:
        _registered.setdefault(kind, cls)
    return cls


def known_kinds() -> list[str]:
    with _lock:
        names = set(BUILTIN) | set(_registered)
    return sorted(names | set(entry_points()))


def check_entry_points() -> None:
    """Refuse an entry point that would shadow a built-in kind (which one wins would be a surprise)."""
    for kind, candidates in entry_points().items():
        if kind in BUILTIN:
            raise ConfigError(f"LLM provider kind {kind!r} is built in; {_describe(candidates[0])} "
                              "must use another name")
