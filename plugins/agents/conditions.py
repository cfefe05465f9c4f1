"""Condition nodes: a fixed set of comparisons on text, checked at save time and evaluated without eval().

    {"operator": "contains", "value": "error"}            # case-insensitive unless case_sensitive
    {"operator": "matches", "value": "^\\d+ tests? passed"}  # a regular expression (searched)
    {"operator": "length_gt", "value": 200}               # characters
    {"operator": "is_empty"}

Regular expressions run with a time limit, so a pathological pattern cannot
hold a worker (catastrophic backtracking).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.errors import ApiError

MAX_PATTERN = 500
REGEX_SECONDS = 1.0
MAX_SUBJECT = 200_000  # characters a condition looks at

_TEXT: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda text, value: value in text,
    "not_contains": lambda text, value: value not in text,
    "equals": lambda text, value: text.strip() == value.strip(),
    "not_equals": lambda text, value: text.strip() != value.strip(),
    "starts_with": lambda text, value: text.lstrip().startswith(value),
    "ends_with": lambda text, value: text.rstrip().endswith(value),
}
_LENGTH: dict[str, Callable[[int, int], bool]] = {
    "length_gt": lambda n, v: n > v,
    "length_gte": lambda n, v: n >= v,
    "length_lt": lambda n, v: n < v,
    "length_lte": lambda n, v: n <= v,
    "length_eq": lambda n, v: n == v,
}
_EMPTY = {"is_empty": True, "not_empty": False}
_REGEX = {"matches": True, "regex": True, "not_matches": False}
OPERATORS = tuple(sorted([*_TEXT, *_LENGTH, *_EMPTY, *_REGEX]))


def problems(config: dict[str, Any]) -> list[str]:
    """What is wrong with a condition's config (empty when it is valid)."""
    operator = config.get("operator")
    if operator not in OPERATORS:
        return [f"config.operator must be one of: {', '.join(OPERATORS)}"]
    value = config.get("value")
    if "case_sensitive" in config and not isinstance(config["case_sensitive"], bool):
        return ["config.case_sensitive must be true or false"]
    if operator in _EMPTY:
        return []
    if operator in _LENGTH:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return [f"config.value of {operator} must be a whole number of characters (0 or more)"]
        return []
    if not isinstance(value, str) or value == "":
        return [f"config.value of {operator} must be non-empty text"]
    if operator in _REGEX:
        if len(value) > MAX_PATTERN:
            return [f"config.value: a pattern may have at most {MAX_PATTERN} characters"]
        import regex

        try:
            regex.compile(value)
        except regex.error as error:
            return [f"config.value is not a valid regular expression: {error}"]
    return []


def evaluate(config: dict[str, Any], text: str) -> bool:
    operator = config["operator"]
    value = config.get("value")
    text = (text or "")[:MAX_SUBJECT]
    if operator in _EMPTY:
        return (text.strip() == "") is _EMPTY[operator]
    if operator in _LENGTH:
        return _LENGTH[operator](len(text), int(value))  # type: ignore[arg-type]
    sensitive = bool(config.get("case_sensitive", False))
    if operator in _REGEX:
        import regex

        flags = 0 if sensitive else regex.IGNORECASE
        try:
            found = regex.search(value, text, flags=flags, timeout=REGEX_SECONDS) is not None
        except TimeoutError:
            raise ApiError(f"The condition's regular expression took longer than {REGEX_SECONDS:g} s.",
                           status=422, code="CONDITION_TIMEOUT") from None
        return found is _REGEX[operator]
    if not sensitive:
        text, value = text.casefold(), str(value).casefold()
    return _TEXT[operator](text, str(value))
