"""Risk of a shell command, by parsing it: `assess(command) -> Assessment`.

- `safe`: only reads (ls, cat, git status, --version);
- `moderate`: writes files in the workspace, builds, fetches or installs (brew install, npm install);
- `dangerous`: root, deletion, permission and system changes (sudo, rm, chmod, systemctl);
- blocked (never runs, whatever the confirmation): recursive deletion of `/`, `~`, `$HOME` or a system
  directory; dd to or from devices; mkfs; fork bombs; reverse shells; content piped or substituted into
  a shell or an interpreter; writes to block devices; recursive permission changes of `/`; anything
  that does not parse.

The command is parsed with bashlex (see shell.py) and every simple command in it - in lists,
pipelines, subshells, loops, functions and substitutions, and in code handed to `sh -c`, `eval`,
`su -c`, `find -exec`, `xargs` - is rated by programs.py after unwrapping sudo/env/nice/timeout and
normalising its name (`/bin/rm`, `\\rm`, `"r"m` are all `rm`).
"""
from __future__ import annotations

from functools import lru_cache

from . import paths, programs
from .arguments import is_option, program_name
from .inline_code import check_inline
from .rating import RISKS, Assessment, Env, Findings, worst
from .shell import Command, Script, Unparsable, Word, parse

__all__ = ["RISKS", "Assessment", "assess", "assess_steps", "worst"]
MAX_NESTING = 4  # sh -c 'sh -c "..."' levels followed before giving up (and blocking)


@lru_cache(maxsize=4096)
def assess(command: str) -> Assessment:
    findings = Findings()
    _assess_into(command, findings, depth=0)
    return findings.result()


def _assess_into(source: str, findings: Findings, depth: int) -> None:
    if depth > MAX_NESTING:
        findings.block(f"it nests shell code more than {MAX_NESTING} levels deep")
        return
    try:
        script = parse(source)
    except Unparsable as error:
        findings.block(f"it cannot be checked: {error}")
        return
    _fork_bombs(script, findings)
    env = Env(findings=findings, cwd=".", nest=lambda code: _assess_into(code, findings, depth + 1))

    def wrote(word: Word, content: str | None) -> None:
        for path in paths.resolve(word, env.cwd) or []:
            findings.writes[path] = content

    def ran(word: Word, kind: str) -> None:
        resolved = paths.resolve(word, env.cwd)
        if resolved:
            findings.runs.append((resolved[0], kind))
            if resolved[0] in findings.writes:
                _run_written(resolved[0], findings.writes[resolved[0]], kind, findings, depth)

    env.wrote, env.ran = wrote, ran
    for command in script.commands:
        name = _name(command)
        if name is not None and name in script.functions:
            programs.check_redirects(command, env)  # the body was rated where the function was defined
            continue
        programs.check(command, env)
        if name in ("cd", "pushd", "chdir", "set-location", "sl"):
            operands = [w for w in command.words[1:] if not is_option(w)]
            env.cwd = paths.change_directory(env.cwd, operands[0] if operands else None)


def _run_written(path: str, content: str | None, kind: str, findings: Findings, depth: int) -> None:
    """A file written (or downloaded) earlier is run: judge what was written, or refuse when unknown."""
    if content is None:
        findings.block(f"it runs {paths.show(path)}, which was just written or downloaded and cannot be checked")
    elif kind == "shell":
        _assess_into(content, findings, depth + 1)
    else:
        check_inline(content, kind, Env(findings=findings, cwd=".", nest=lambda code: None))


def assess_steps(commands: list[str]) -> list[Assessment]:
    """Each step's assessment, also judging a step that runs a file an earlier step wrote."""
    written: dict[str, str | None] = {}
    results = []
    for command in commands:
        assessment = assess(command)
        own = dict(assessment.writes)
        extra = Findings()
        for path, kind in assessment.runs:
            if path in written and path not in own:
                _run_written(path, written[path], kind, extra, 0)
        results.append(_merged(assessment, extra) if extra.blocks or extra.risk != "safe" else assessment)
        written.update(own)
    return results


def _merged(assessment: Assessment, extra: Findings) -> Assessment:
    more = extra.result()
    blocked = assessment.blocked or more.blocked
    reasons = tuple(dict.fromkeys((*more.reasons, *assessment.reasons) if more.blocked else
                                  (*assessment.reasons, *more.reasons)))
    reason = (more.reason if more.blocked else assessment.reason) if blocked else (
        more.reason if worst(more.risk, assessment.risk) != assessment.risk else assessment.reason)
    return Assessment(worst(assessment.risk, more.risk), blocked, reason, reasons, assessment.writes,
                      assessment.runs)


def _name(command: Command) -> str | None:
    if not command.words or command.words[0].dynamic:
        return None
    return program_name(command.words[0].text)


def _fork_bombs(script: Script, findings: Findings) -> None:
    for name, body in script.functions.items():
        if any(_calls(command, name) for command in body):
            findings.block(f"the function {name} calls itself (a fork bomb pattern)")
    if any(command.in_loop and command.background for command in script.commands):
        findings.block("it starts background processes in a loop (a fork bomb pattern)")


def _calls(command: Command, name: str) -> bool:
    texts = [w.text for w in command.words if not w.dynamic]
    if not texts:
        return False
    return texts[0] == name or (program_name(texts[0]) in programs.WRAPPERS and name in texts[1:])
