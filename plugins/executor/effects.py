"""Helpers the program rules share: files written, variables assigned, code handed to a shell."""
from __future__ import annotations

import re

from . import paths
from . import program_tables as t
from .arguments import program_name
from .rating import DANGEROUS, MODERATE, Env
from .shell import Command, Word


def writes(word: Word, env: Env, content: str | None = None) -> None:
    """A file this command writes: rated by where it is, and remembered (running it later is checked)."""
    apply(paths.write_concern(word, env.cwd) or ("moderate", ""), env)
    env.wrote(word, content)


def printed(command: Command) -> str | None:
    """What `echo`/`printf` with literal arguments, or `cat` of a here-document, writes; None when unknown."""
    words = command.words
    if not words or any(w.dynamic for w in words):
        return None
    name = program_name(words[0].text)
    args = [w.text for w in words[1:]]
    if name == "echo":
        while args and re.fullmatch(r"-[neE]+", args[0]):
            args = args[1:]
        return " ".join(args)
    if name == "printf" and args:
        return _printf_escapes(args[0])
    if name == "cat" and not args:
        heredoc = next((r.heredoc for r in command.redirects if r.heredoc is not None), None)
        return heredoc.rsplit("\n", 1)[0] if heredoc is not None else None
    return None


def _printf_escapes(text: str) -> str:
    def one(match: re.Match) -> str:
        code = match.group(1)
        if code[0] == "x":
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8) & 0xFF)
        return {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}.get(
            code, code)

    return re.sub(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", one, text)


def apply(found: tuple[str, str], env: Env) -> None:
    level, reason = found
    if level == "block":
        env.block(reason)
    elif reason:
        env.rate(DANGEROUS if level == "dangerous" else MODERATE, reason)


def assignment(word: Word, env: Env) -> None:
    name = word.text.split("=", 1)[0]
    if name in t.LOADER_VARIABLES or name.startswith(("LD_", "DYLD_")):
        env.rate(DANGEROUS, f"sets {name}, which changes how programs are loaded or run")
    elif name == "PATH":
        env.rate(MODERATE, "changes PATH, which decides which programs run")


def joined(words: list[Word]) -> Word:
    return Word(text=" ".join(w.text for w in words), raw=" ".join(w.raw for w in words),
                parameters=tuple(p for w in words for p in w.parameters),
                substitution=any(w.substitution for w in words),
                process_substitution=any(w.process_substitution for w in words))


def nest_code(word: Word, how: str, env: Env) -> None:
    """Shell code given as a string (sh -c, eval, su -c): judged like any command, unless it is computed."""
    if word.substitution or word.process_substitution:
        env.block(f"{how} runs shell code that another command produces at run time")
        return
    if word.parameters:
        env.rate(DANGEROUS, f"{how} runs shell code with values only known at run time")
    env.nest(word.text)
