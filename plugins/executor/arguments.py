"""Reading a program's arguments the way getopt would: `-rf` = `-r -f`, `--force`, `-ofile`, `--out=x`, `--`."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .shell import Word

_VERSIONED = re.compile(r"^(python|pip|perl|ruby|php|node|lua|pypy|gcc|g\+\+|clang|idle)[0-9.]*(?:-[0-9.]+)?$")


def program_name(text: str) -> str:
    """`/usr/bin/python3.11` -> "python", `C:\\...\\WINGET.EXE` -> "winget", `\\rm` is already "rm"."""
    base = re.split(r"[/\\]", text)[-1].lower()
    base = re.sub(r"\.(?:exe|cmd|bat|com)$", "", base)
    match = _VERSIONED.match(base)
    return match.group(1) if match else base


@dataclass
class Args:
    flags: set[str] = field(default_factory=set)  # short letters and long names, without dashes
    values: dict[str, list[Word]] = field(default_factory=dict)  # option -> its values
    operands: list[Word] = field(default_factory=list)
    rest: list[Word] = field(default_factory=list)  # words after the first operand, when options stop there

    def has(self, *names: str) -> bool:
        return any(n in self.flags or n in self.values for n in names)

    def value(self, *names: str) -> Word | None:
        for name in names:
            if self.values.get(name):
                return self.values[name][-1]
        return None

    def all_values(self, *names: str) -> list[Word]:
        return [w for name in names for w in self.values.get(name, [])]


def _word(text: str, like: Word) -> Word:
    return Word(text=text, raw=text, parameters=like.parameters, substitution=like.substitution,
                process_substitution=like.process_substitution)


def parse(words: list[Word], short_values: str = "", long_values: tuple[str, ...] = (),
          stop_at_operand: bool = False) -> Args:
    """`short_values`: letters that take a value (`-o file`, `-ofile`); `long_values`: long names that do
    (`--output file`, `--output=file`). With `stop_at_operand`, the first operand and everything after it
    land in `operands` + `rest` unparsed (sudo, env, xargs: what follows is another command)."""
    args = Args()
    i = 0
    while i < len(words):
        word = words[i]
        text = word.text
        if text == "--":
            args.operands += words[i + 1:]
            break
        if text.startswith("--") and len(text) > 2:
            name, eq, value = text[2:].partition("=")
            name = name.lower()
            if eq:
                args.values.setdefault(name, []).append(_word(value, word))
            elif name in long_values and i + 1 < len(words):
                args.values.setdefault(name, []).append(words[i + 1])
                i += 1
            else:
                args.flags.add(name)
        elif text.startswith("-") and len(text) > 1:
            letters = text[1:]
            for index, letter in enumerate(letters):
                if letter in short_values:
                    attached = letters[index + 1:]
                    if attached:
                        args.values.setdefault(letter, []).append(_word(attached, word))
                    elif i + 1 < len(words):
                        args.values.setdefault(letter, []).append(words[i + 1])
                        i += 1
                    break
                args.flags.add(letter)
        else:
            if stop_at_operand:
                args.operands.append(word)
                args.rest = words[i + 1:]
                break
            args.operands.append(word)
        i += 1
    return args


def is_option(word: Word) -> bool:
    return word.text.startswith("-") and word.text != "-"


def basename(word: Word) -> str:
    return os.path.basename(word.text)
