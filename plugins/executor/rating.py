"""Risk levels, the verdict of one command, and the accumulator the rules write into."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .shell import Word

SAFE, MODERATE, DANGEROUS = "safe", "moderate", "dangerous"
RISKS = (SAFE, MODERATE, DANGEROUS)
_ORDER = {SAFE: 0, MODERATE: 1, DANGEROUS: 2}


def worst(*risks: str) -> str:
    return max(risks, key=_ORDER.__getitem__, default=SAFE)


@dataclass(frozen=True)
class Assessment:
    """The verdict on one command: its risk, whether it must never run, and why."""

    risk: str
    blocked: bool = False
    reason: str = ""  # the block reason, or the reason for the risk level
    reasons: tuple[str, ...] = ()  # everything the rules noticed, most severe first
    writes: tuple[tuple[str, str | None], ...] = ()  # files it writes: (path, content when known)
    runs: tuple[tuple[str, str], ...] = ()  # files it runs as code: (path, "shell" | language)

    def as_dict(self) -> dict[str, object]:
        return {"risk": self.risk, "blocked": self.blocked, "reason": self.reason, "reasons": list(self.reasons)}


class Findings:
    def __init__(self) -> None:
        self.risk = SAFE
        self.blocks: list[str] = []
        self.notes: dict[str, list[str]] = {SAFE: [], MODERATE: [], DANGEROUS: []}
        self.writes: dict[str, str | None] = {}
        self.runs: list[tuple[str, str]] = []

    def rate(self, risk: str, reason: str = "") -> None:
        self.risk = worst(self.risk, risk)
        if reason and reason not in self.notes[risk]:
            self.notes[risk].append(reason)

    def block(self, reason: str) -> None:
        self.risk = DANGEROUS
        if reason not in self.blocks:
            self.blocks.append(reason)

    def result(self) -> Assessment:
        ordered = [*self.blocks, *self.notes[DANGEROUS], *self.notes[MODERATE], *self.notes[SAFE]]
        effects = {"writes": tuple(self.writes.items()), "runs": tuple(self.runs)}
        if self.blocks:
            return Assessment(DANGEROUS, True, self.blocks[0], tuple(ordered), **effects)
        reason = (self.notes[self.risk] or ["read-only"])[0]
        return Assessment(self.risk, False, reason, tuple(ordered), **effects)


@dataclass
class Env:
    """What a rule may consult or call besides the command itself."""

    findings: Findings
    cwd: str  # working directory as far as it can be known (see paths.DYNAMIC)
    nest: Callable[[str], None]  # assess a command string run by this one (sh -c, eval, su -c)
    wrote: Callable[[Word, str | None], None] = lambda word, content: None  # a file it writes (content if known)
    ran: Callable[[Word, str], None] = lambda word, kind: None  # a file it runs as code ("shell" or a language)

    def rate(self, risk: str, reason: str = "") -> None:
        self.findings.rate(risk, reason)

    def block(self, reason: str) -> None:
        self.findings.block(reason)
