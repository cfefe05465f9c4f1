"""Shell commands parsed (bashlex) into the facts the risk rules read: never raw-text matching.

`parse(source)` returns a `Script`: every simple command in order, from every
list, pipeline, subshell, group, loop, function body and command or process
substitution, each with its words (quotes and escapes already removed,
`$'...'` decoded), its redirections and where it sits (fed by a pipe, run in
the background, inside a loop or a function). Anything bashlex cannot parse,
or parses only partly (arithmetic, `[[ ]]`, `case`, `time`, arrays), raises
`Unparsable`: the checker fails closed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import bashlex

MAX_LENGTH = 8192  # characters of one command
MAX_DEPTH = 60  # AST nesting
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LEADING_PARAM = re.compile(r'^"?\$(?:\{[#!]?(\w+)|(\w+|[@*#?$!0-9-]))')


class Unparsable(Exception):
    """The command cannot be parsed (or only partly): it must not run."""


@dataclass(frozen=True)
class Word:
    text: str  # the value after quote removal (expansions left in place, e.g. "$HOME/x")
    raw: str  # as written
    parameters: tuple[str, ...] = ()  # parameters expanded inside ("HOME", "1", ...)
    substitution: bool = False  # $(...) or `...` inside
    process_substitution: bool = False  # <(...) or >(...) inside

    @property
    def dynamic(self) -> bool:
        """Its value is only known when the shell runs it."""
        return bool(self.parameters) or self.substitution or self.process_substitution

    @property
    def leading_parameter(self) -> str | None:
        """The parameter the value starts with (`$HOME/x` -> "HOME"), else None."""
        match = _LEADING_PARAM.match(self.raw)
        return (match.group(1) or match.group(2)) if match else None

    @property
    def starts_dynamic(self) -> bool:
        raw = self.raw.lstrip('"')
        return raw.startswith(("$(", "`", "<(", ">(")) or self.leading_parameter is not None


@dataclass(frozen=True)
class Redirect:
    op: str  # ">", ">>", ">|", "&>", ">&", "<", "<>", "<&", "<<", "<<-", "<<<"
    fd: int | None  # the redirected descriptor when written (2 in 2>x)
    target: Word | None  # None when it duplicates a descriptor (2>&1)
    heredoc: str | None = None

    @property
    def writes(self) -> bool:
        return self.op in (">", ">>", ">|", "&>", ">&", "<>", "&>>")

    @property
    def feeds_stdin(self) -> bool:
        return self.op in ("<", "<>", "<<", "<<-", "<<<") and self.fd in (None, 0)


@dataclass
class Command:
    words: list[Word]
    assignments: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    piped_in: bool = False  # a pipeline stage before it feeds its stdin
    feeders: tuple[Command, ...] = ()  # the commands of the stage feeding it
    background: bool = False
    in_loop: bool = False  # inside a while/until loop
    function: str | None = None  # enclosing function definition
    origin: str = "command"  # "command" | "substitution" | "process substitution"

    @property
    def stdin_fed(self) -> bool:
        """Its input is content (a pipe, here-doc, here-string or redirected file), not the sandbox's /dev/null."""
        return self.piped_in or any(r.feeds_stdin for r in self.redirects)


@dataclass
class Script:
    source: str
    commands: list[Command] = field(default_factory=list)
    functions: dict[str, list[Command]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    piped_in: bool = False
    feeders: tuple[Command, ...] = ()
    background: bool = False
    in_loop: bool = False
    function: str | None = None
    origin: str = "command"


def parse(source: str) -> Script:
    if not source.strip():
        raise Unparsable("the command is empty")
    if len(source) > MAX_LENGTH:
        raise Unparsable(f"the command is longer than {MAX_LENGTH} characters")
    if _CONTROL.search(source):
        raise Unparsable("the command contains control characters")
    try:
        trees = bashlex.parse(source)
    except NotImplementedError as error:
        raise Unparsable(f"it uses shell syntax the checker does not support ({_first_line(error)}); "
                         "write the step without it") from None
    except RecursionError:
        raise Unparsable("it is nested too deeply") from None
    except Exception as error:  # bashlex's ParsingError, MatchedPairError, and its own internal failures
        raise Unparsable(f"it does not parse as a shell command ({_first_line(error)})") from None
    walker = _Walker(source)
    for tree in trees:
        walker.node(tree, _Context(), 0)
    return walker.script


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:120]


class _Walker:
    def __init__(self, source: str):
        self.source = source
        self.script = Script(source)

    def node(self, node: bashlex.ast.node, ctx: _Context, depth: int) -> list[Command]:
        """Walk one node; returns the simple commands it produced (for pipeline feeders)."""
        if depth > MAX_DEPTH:
            raise Unparsable("it is nested too deeply")
        kind = node.kind
        if kind == "command":
            return [self.command(node, ctx, depth)]
        if kind == "list":
            return self.sequence(node.parts, ctx, depth)
        if kind == "pipeline":
            return self.pipeline(node, ctx, depth)
        if kind == "compound":
            made = self.sequence(node.list, ctx, depth)
            redirects = [self.redirect(r, ctx, depth) for r in getattr(node, "redirects", [])]
            if redirects:  # `{ ...; } > /dev/sda` redirects every command inside
                for command in made:
                    command.redirects.extend(redirects)
                if not made:
                    made = [self.add(Command(words=[], redirects=redirects), ctx)]
            return made
        if kind in ("if", "for", "while", "until"):
            inner = replace(ctx, in_loop=ctx.in_loop or kind in ("while", "until"))
            made: list[Command] = []
            for part in node.parts:
                if part.kind == "word":  # `for x in $(...)`: the list words may hold substitutions
                    self.word(part, ctx, depth)
                elif part.kind not in ("reservedword", "operator"):
                    made += self.node(part, inner, depth + 1)
            return made
        if kind == "function":
            name = node.name.word
            body = replace(ctx, function=name, piped_in=False, feeders=(), background=False)
            before = len(self.script.commands)
            self.node(node.body, body, depth + 1)
            self.script.functions.setdefault(name, []).extend(self.script.commands[before:])
            return []
        if kind in ("operator", "reservedword", "pipe"):
            return []
        raise Unparsable(f"it uses a shell construct the checker does not know ({kind})")

    def sequence(self, parts: list, ctx: _Context, depth: int) -> list[Command]:
        made: list[Command] = []
        for index, part in enumerate(parts):
            if part.kind in ("operator", "reservedword"):
                continue
            following = parts[index + 1] if index + 1 < len(parts) else None
            background = following is not None and following.kind == "operator" and following.op == "&"
            made += self.node(part, replace(ctx, background=ctx.background or background), depth + 1)
        return made

    def pipeline(self, node: bashlex.ast.node, ctx: _Context, depth: int) -> list[Command]:
        stages = [p for p in node.parts if p.kind not in ("pipe", "reservedword")]
        made: list[Command] = []
        feeders: tuple[Command, ...] = ctx.feeders
        for index, stage in enumerate(stages):
            stage_ctx = replace(ctx, piped_in=ctx.piped_in or index > 0, feeders=feeders if index else ctx.feeders)
            produced = self.node(stage, stage_ctx, depth + 1)
            made += produced
            feeders = tuple(produced)
        return made

    def command(self, node: bashlex.ast.node, ctx: _Context, depth: int) -> Command:
        command = Command(words=[])
        for part in node.parts:
            if part.kind == "assignment":
                word = self.word(part, ctx, depth)
                (command.words if command.words else command.assignments).append(word)
            elif part.kind == "word":
                command.words.append(self.word(part, ctx, depth))
            elif part.kind == "redirect":
                command.redirects.append(self.redirect(part, ctx, depth))
            else:
                raise Unparsable(f"it uses a shell construct the checker does not know ({part.kind})")
        return self.add(command, ctx)

    def add(self, command: Command, ctx: _Context) -> Command:
        command.piped_in, command.feeders = ctx.piped_in, ctx.feeders
        command.background, command.in_loop = ctx.background, ctx.in_loop
        command.function, command.origin = ctx.function, ctx.origin
        self.script.commands.append(command)
        return command

    def word(self, node: bashlex.ast.node, ctx: _Context, depth: int) -> Word:
        start, end = node.pos
        raw = self.source[start:end]
        text = decode(raw) if "$'" in raw else node.word
        parameters: list[str] = []
        substitution = process = False
        for part in _parts(node):
            if part.kind == "parameter":
                parameters.append(part.value)
            elif part.kind == "commandsubstitution":
                substitution = True
                self.node(part.command, _Context(in_loop=ctx.in_loop, function=ctx.function,
                                                 origin="substitution"), depth + 1)
            elif part.kind == "processsubstitution":
                process = True
                self.node(part.command, _Context(in_loop=ctx.in_loop, function=ctx.function,
                                                 origin="process substitution"), depth + 1)
        return Word(text=text, raw=raw, parameters=tuple(parameters), substitution=substitution,
                    process_substitution=process)

    def redirect(self, node: bashlex.ast.node, ctx: _Context, depth: int) -> Redirect:
        fd = node.input if isinstance(node.input, int) else None
        heredoc = node.heredoc.value if getattr(node, "heredoc", None) is not None else None
        target = self.word(node.output, ctx, depth) if not isinstance(node.output, int) else None
        return Redirect(op=node.type, fd=fd, target=target, heredoc=heredoc)


def _parts(node: bashlex.ast.node) -> list:
    """Expansion parts of a word (parameters nested in `${x:-$y}` included)."""
    found = []
    for part in getattr(node, "parts", None) or []:
        found.append(part)
        if part.kind not in ("commandsubstitution", "processsubstitution"):
            found += _parts(part)
    return found


_ANSI_SIMPLE = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}


def decode(raw: str) -> str:
    """Quote removal for one word, with `$'...'` (ANSI-C quoting, which bashlex mangles) decoded."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == "\\":
            if i + 1 < n and raw[i + 1] != "\n":
                out.append(raw[i + 1])
            i += 2
        elif ch == "'":
            end = raw.find("'", i + 1)
            end = n if end < 0 else end
            out.append(raw[i + 1:end])
            i = end + 1
        elif ch == "$" and raw.startswith("$'", i):
            text, i = _ansi_c(raw, i + 2)
            out.append(text)
        elif ch == '"' or (ch == "$" and raw.startswith('$"', i)):
            i += 2 if ch == "$" else 1
            while i < n and raw[i] != '"':
                if raw[i] == "\\" and i + 1 < n and raw[i + 1] in '$`"\\\n':
                    if raw[i + 1] != "\n":
                        out.append(raw[i + 1])
                    i += 2
                else:
                    out.append(raw[i])
                    i += 1
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _ansi_c(raw: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    n = len(raw)
    while i < n and raw[i] != "'":
        ch = raw[i]
        if ch != "\\" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1]
        if nxt in _ANSI_SIMPLE:
            out.append(_ANSI_SIMPLE[nxt])
            i += 2
        elif nxt in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            digits = re.match("[0-9a-fA-F]{1," + str(width) + "}", raw[i + 2:])
            if digits:
                out.append(chr(min(int(digits.group(), 16), 0x10FFFF)))
                i += 2 + len(digits.group())
            else:
                out.append("\\" + nxt)
                i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", raw[i + 1:])
            out.append(chr(int(digits.group(), 8) & 0xFF))  # type: ignore[union-attr]
            i += 1 + len(digits.group())  # type: ignore[union-attr]
        elif nxt == "c" and i + 2 < n:
            out.append(chr(ord(raw[i + 2]) & 0x1F))
            i += 3
        else:
            out.append("\\" + nxt)
            i += 2
    return "".join(out), i + 1
