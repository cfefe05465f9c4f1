"""What a planner produces: steps (with a rough duration) and the plan, or why there is none."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    description: str
    command: str
    seconds: tuple[int, int] = (1, 5)  # rough duration, for estimated_time


@dataclass(frozen=True)
class Plan:
    intent: str
    steps: list[Step]


class Unsupported(Exception):
    def __init__(self, message: str, suggestions: list[str]):
        super().__init__(message)
        self.message = message
        self.suggestions = suggestions
