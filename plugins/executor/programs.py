"""Per-program rules: wrappers unwrapped (sudo, env, nice, timeout, ...), flags read as getopt does,
targets judged after `cd`s, shells and interpreters followed into the code they run."""
from __future__ import annotations

from collections.abc import Callable

from . import effects, paths, rules_code, rules_files, rules_tools
from . import program_tables as t
from .arguments import is_option, parse, program_name
from .rating import DANGEROUS, MODERATE, SAFE, Env
from .shell import Command, Word

Rule = Callable[[str, list[Word], Command, Env], None]
Wrapper = Callable[[list[Word], Command, Env], list[Word]]


def check(command: Command, env: Env) -> None:
    for word in command.assignments:
        effects.assignment(word, env)
    check_redirects(command, env)
    if command.words:
        run(command.words, command, env)


def run(words: list[Word], command: Command, env: Env) -> None:
    """Rate the program `words[0]` with the rest of `words` as its arguments."""
    while words:
        head = words[0]
        if head.dynamic:
            env.block(f"the program to run is only known at run time ({head.raw})")
            return
        name = program_name(head.text)
        wrapper = WRAPPERS.get(name)
        if wrapper is None:
            break
        words = wrapper(words[1:], command, env)
    if not words:
        return
    name = program_name(words[0].text)
    args = words[1:]
    if args and len(args) <= 2 and all(a.text in t.VERSION_ARGS or (a.text in ("-v", "-V", "-h") and name in
                                                                    t.SHORT_VERSION_PROGRAMS) for a in args):
        env.rate(SAFE, f"{name} prints its version or help")
        return
    rule = RULES.get(name)
    if rule is None and name.startswith(t.FORMATTERS_PREFIX):
        rule = rules_files.formatter
    if rule is None and name in t.SUBCOMMANDS:
        rule = rules_tools.subcommands
    if rule is not None:
        rule(name, args, command, env)
    elif name in t.SAFE_PROGRAMS:
        rules_tools.reader(name, args, env)
    elif name in t.SAFE_FORMS and rules_tools.safe_form(name, args):
        env.rate(SAFE, f"{name} only shows information")
    elif name in t.DANGEROUS_PROGRAMS:
        env.rate(DANGEROUS, f"{name} {t.DANGEROUS_PROGRAMS[name]}")
    elif name in t.MODERATE_PROGRAMS:
        env.rate(MODERATE, f"{name} changes files, builds or installs software")
        rules_files.write_targets(name, args, env)
    elif "/" in words[0].text or "\\" in words[0].text:
        env.rate(MODERATE, f"runs the local program {words[0].text}")
        env.ran(words[0], "shell")
    else:
        env.rate(MODERATE, f"{name} is not a program the checker knows; its effect cannot be rated")


def check_redirects(command: Command, env: Env) -> None:
    for redirect in command.redirects:
        target = redirect.target
        if target is None or redirect.op in ("<<", "<<-", "<<<"):
            continue
        if redirect.writes:
            effects.writes(target, env, effects.printed(command) if redirect.op in (">", ">|", "&>") else None)
        elif target.text.startswith(("/dev/tcp/", "/dev/udp/")):
            env.block(f"reads from a network connection through {target.text} (a reverse shell pattern)")
        elif device := paths.device_read(target, env.cwd):
            env.rate(DANGEROUS, f"reads the raw device {device}")
        elif secret := paths.secret(target, env.cwd):
            env.rate(DANGEROUS, f"reads the secret file {secret}")


def _sudo(words: list[Word], command: Command, env: Env) -> list[Word]:
    args = parse(words, short_values="ugphCDrtTU", long_values=("user", "group", "host", "prompt", "close-from",
                                                                   "chdir", "role", "type", "command-timeout",
                                                                   "other-user"), stop_at_operand=True)
    env.rate(DANGEROUS, "runs as root (sudo)")
    if not args.operands and args.has("s", "i", "shell", "login") and command.stdin_fed:
        env.block("content is fed into a root shell (sudo -s/-i)")
    return args.operands + args.rest


def _su(words: list[Word], command: Command, env: Env) -> list[Word]:
    args = parse(words, short_values="cgGsw", long_values=("command", "group", "shell", "whitelist-environment"))
    env.rate(DANGEROUS, "runs as another user (su)")
    payload = args.value("c", "command")
    if payload is not None:
        effects.nest_code(payload, "su -c", env)
    elif command.stdin_fed:
        env.block("content is fed into a shell (su)")
    return []


def _env(words: list[Word], command: Command, env: Env) -> list[Word]:
    args = parse(words, short_values="uCS", long_values=("unset", "chdir", "split-string"), stop_at_operand=True)
    split = args.value("S", "split-string")
    if split is not None:
        effects.nest_code(split, "env -S", env)
    rest = args.operands + args.rest
    while rest and "=" in rest[0].text and not rest[0].text.startswith("="):
        effects.assignment(rest[0], env)
        rest = rest[1:]
    if not rest:
        env.rate(SAFE, "env prints the environment")
    return rest


def _skipping(short_values: str, long_values: tuple[str, ...] = (), operands_first: int = 0) -> Wrapper:
    """A wrapper with its own options, then `operands_first` operands of its own, then the command."""

    def wrapper(words: list[Word], command: Command, env: Env) -> list[Word]:
        args = parse(words, short_values=short_values, long_values=long_values, stop_at_operand=True)
        rest = args.operands + args.rest
        return rest[operands_first:]

    return wrapper


def _command_builtin(words: list[Word], command: Command, env: Env) -> list[Word]:
    args = parse(words, stop_at_operand=True)
    if args.has("v", "V"):
        env.rate(SAFE, "command -v looks a program up")
        return []
    return args.operands + args.rest


def _busybox(words: list[Word], command: Command, env: Env) -> list[Word]:
    return words


def _watch(words: list[Word], command: Command, env: Env) -> list[Word]:
    args = parse(words, short_values="nqd", long_values=("interval", "differences"), stop_at_operand=True)
    rest = args.operands + args.rest
    if rest:
        effects.nest_code(effects.joined(rest), "watch", env)
    return []


def _trap(words: list[Word], command: Command, env: Env) -> list[Word]:
    args = parse(words, stop_at_operand=True)
    if args.operands and not args.has("p", "l"):
        effects.nest_code(args.operands[0], "trap", env)
    return []


def _xargs(words: list[Word], command: Command, env: Env) -> list[Word]:
    args = parse(words, short_values="adEIiLlnPs", long_values=("arg-file", "delimiter", "eof", "replace",
                                                                 "max-lines", "max-args", "max-procs", "max-chars",
                                                                 "process-slot-var"), stop_at_operand=True)
    inner = args.operands + args.rest
    if not inner:
        env.rate(SAFE, "xargs echoes its input")
        return []
    if not inner[0].dynamic and program_name(inner[0].text) in t.DELETERS:
        env.rate(DANGEROUS, f"{program_name(inner[0].text)} acts on paths read from its input (xargs)")
        for feeder in command.feeders:
            for word in feeder.words[1:]:
                if not is_option(word) and (reason := paths.protected(word, env.cwd)):
                    env.block(f"{program_name(inner[0].text)} acts on paths listed from {reason}")
    return inner


WRAPPERS: dict[str, Wrapper] = {
    "sudo": _sudo, "doas": _skipping("uC"), "pkexec": _skipping("", ("user",)), "run0": _skipping("u"),
    "su": _su, "runuser": _su, "env": _env, "nice": _skipping("n", ("adjustment",)),
    "nohup": _skipping(""), "timeout": _skipping("sk", ("signal", "kill-after"), operands_first=1),
    "stdbuf": _skipping("ioe", ("input", "output", "error")), "ionice": _skipping("cnpt", ("class", "classdata")),
    "chrt": _skipping("", (), operands_first=1), "taskset": _skipping("", (), operands_first=1),
    "setsid": _skipping(""), "caffeinate": _skipping("tw"), "unbuffer": _skipping(""), "command": _command_builtin,
    "builtin": _skipping(""), "exec": _skipping("a"), "flock": _skipping("wEc", ("timeout", "conflict-exit-code"),
                                                                          operands_first=1),
    "strace": _skipping("oepsuEIabXP"), "ltrace": _skipping("oepsuabn"), "arch": _skipping(""),
    "busybox": _busybox, "toybox": _busybox, "watch": _watch, "trap": _trap, "xargs": _xargs,
    "time": _skipping(""), "chronic": _skipping(""), "firejail": _skipping(""), "sg": _skipping("", (),
                                                                                                operands_first=1),
}


RULES: dict[str, Rule] = {**rules_code.RULES, **rules_files.RULES, **rules_tools.RULES}
