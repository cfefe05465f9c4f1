"""Rules for programs that run code: shells, eval, source, interpreters, awk, sed, PowerShell, ssh."""
from __future__ import annotations

import re

from . import effects, rules_tools
from . import program_tables as t
from .arguments import is_option, parse
from .inline_code import check_inline
from .rating import DANGEROUS, MODERATE, SAFE, Env
from .shell import Command, Word


def _shell(name: str, args: list[Word], command: Command, env: Env) -> None:
    payload_next = reads_stdin = False
    payload: Word | None = None
    script: Word | None = None
    i = 0
    while i < len(args):
        text = args[i].text
        if text == "--":
            i += 1
            break
        if text in ("-o", "+o", "--rcfile", "--init-file", "-O", "+O"):
            i += 2
            continue
        if text.startswith(("-", "+")) and len(text) > 1:
            payload_next = payload_next or (not text.startswith("--") and "c" in text[1:])
            reads_stdin = reads_stdin or (not text.startswith("--") and "s" in text[1:])
            i += 1
            continue
        break
    if i < len(args):
        if payload_next:
            payload = args[i]
        else:
            script = args[i]
    if payload is not None:
        effects.nest_code(payload, f"{name} -c", env)
    elif script is not None and not reads_stdin:
        if script.process_substitution:
            env.block(f"{name} runs a script that another command produces (process substitution)")
        elif script.dynamic:
            env.block(f"{name} runs a script only known at run time ({script.raw})")
        elif script.text in ("-", "/dev/stdin", "/dev/fd/0") and command.stdin_fed:
            env.block(f"content is piped or fed into a shell ({name})")
        else:
            env.rate(MODERATE, f"{name} runs the script {script.text}")
            env.ran(script, "shell")
    elif command.stdin_fed:
        env.block(f"content is piped or fed into a shell ({name})")
    else:
        env.rate(MODERATE, f"{name} starts a shell")


def _source(name: str, args: list[Word], command: Command, env: Env) -> None:
    if not args:
        return
    if args[0].process_substitution or args[0].substitution:
        env.block(f"{name} runs shell code that another command produces at run time")
    elif args[0].dynamic:
        env.rate(DANGEROUS, f"{name} runs a script only known at run time ({args[0].raw})")
    else:
        env.rate(MODERATE, f"{name} runs the shell script {args[0].text} in the current shell")
        env.ran(args[0], "shell")


def _eval(name: str, args: list[Word], command: Command, env: Env) -> None:
    if args:
        effects.nest_code(effects.joined(args), "eval", env)


def _interpreter(name: str, args: list[Word], command: Command, env: Env) -> None:
    code_options, value_letters = t.INTERPRETERS.get(name, (set(), ""))
    parsed = parse(args, short_values="".join(code_options) + value_letters,
                   long_values=tuple(t.INTERPRETER_LONG_CODE), stop_at_operand=True)
    code = next((parsed.value(o) for o in (*code_options, *t.INTERPRETER_LONG_CODE) if parsed.value(o)), None)
    label = {"python": "Python", "perl": "Perl", "ruby": "Ruby", "node": "JavaScript", "php": "PHP"}.get(name, name)
    if code is not None:
        if code.substitution or code.process_substitution:
            env.block(f"{name} runs code that another command produces at run time")
            return
        check_inline(code.text, label, env)
        if code.parameters:
            env.rate(DANGEROUS, f"{name} runs code with values only known at run time")
        return
    module = parsed.value("m")
    if module is not None and name in ("python", "pypy"):
        _python_module(module.text, parsed.operands + parsed.rest, command, env)
        return
    script = parsed.operands[0] if parsed.operands else None
    if script is None or script.text in ("-", "/dev/stdin"):
        if command.stdin_fed:
            env.block(f"content is piped or fed into an interpreter ({name})")
        else:
            env.rate(MODERATE, f"{name} starts an interpreter")
    elif script.process_substitution or script.substitution:
        env.block(f"{name} runs a script that another command produces at run time")
    else:
        env.rate(MODERATE, f"{name} runs the script {script.text}")
        env.ran(script, label)


def _python_module(module: str, rest: list[Word], command: Command, env: Env) -> None:
    if module == "pip":
        rules_tools.subcommands("pip", rest, command, env)
    elif module in ("json.tool", "site", "platform", "sysconfig", "this", "tabnanny", "pydoc", "timeit"):
        env.rate(SAFE, f"python -m {module} only reads")
        if module == "json.tool" and len([w for w in rest if not is_option(w)]) > 1:
            env.rate(MODERATE, "python -m json.tool writes a file")
    elif module in ("venv", "virtualenv"):
        env.rate(MODERATE, "creates a Python virtual environment")
    else:
        env.rate(MODERATE, f"python runs the module {module}")


def _awk(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="Fvf", long_values=("file", "assign", "field-separator"))
    if parsed.value("f", "file") is not None:
        env.rate(MODERATE, f"{name} runs the program file {parsed.value('f', 'file').text}")  # type: ignore
        return
    if not parsed.operands:
        return
    program = parsed.operands[0].text
    if "/inet/" in program:
        env.block(f"{name} opens a network connection (/inet/), a reverse shell pattern")
    elif re.search(r"\|\s*&?\s*\"\s*(?:/bin/|/usr/bin/)?(?:ba|z|da|k)?sh\b", program):
        env.block(f"{name} pipes content into a shell")
    elif re.search(r"\bsystem\s*\(|\|\s*&|\|\s*\"|\"\s*\|\s*getline", program):
        env.rate(DANGEROUS, f"{name} runs other commands (system() or a pipe)")
    elif re.search(r">\s*\"", program):
        env.rate(MODERATE, f"{name} writes a file")
    else:
        env.rate(SAFE, f"{name} reads text")


def _sed(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="efl", long_values=("expression", "file", "line-length", "in-place"))
    scripts = [w.text for w in parsed.all_values("e", "expression")]
    if not scripts and parsed.value("f", "file") is None and parsed.operands:
        scripts = [parsed.operands[0].text]
    for script in scripts:
        if re.search(r"(?:^|[;}\n])\s*e(?:\s|$)|/[gpiImM0-9]*e[gpiImM0-9]*\s*(?:$|[;}\n])", script):
            env.rate(DANGEROUS, "sed runs commands (the e command or flag)")
        if re.search(r"\bw\s*/dev/(?!null|stdout|stderr)", script):
            env.block("sed writes to a device")
    if parsed.has("i", "in-place") or any(k.startswith("in-place") for k in parsed.values):
        env.rate(MODERATE, "sed edits files in place")
    else:
        env.rate(SAFE, "sed reads text")


def _powershell(name: str, args: list[Word], command: Command, env: Env) -> None:
    lowered = [a.text.lower() for a in args]
    if any(x in ("-encodedcommand", "-enc", "-e", "-ec", "-en", "-encoded") for x in lowered):
        env.block(f"{name} runs an encoded (hidden) command")
        return
    for flag in ("-command", "-c"):
        if flag in lowered and lowered.index(flag) + 1 < len(args):
            code = args[lowered.index(flag) + 1:]
            joined = effects.joined(code)
            if joined.substitution:
                env.block(f"{name} runs code that another command produces at run time")
            check_inline(joined.text, "PowerShell", env)
            return
    if command.stdin_fed and not any(x in ("-file", "-f") for x in lowered):
        env.block(f"content is piped or fed into {name}")
    env.rate(MODERATE, f"{name} runs a script")


def _cmd(name: str, args: list[Word], command: Command, env: Env) -> None:
    env.rate(DANGEROUS, "cmd.exe runs commands the checker cannot read")


def _ssh(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="bcDEeFIiJLlmOopQRSWw", stop_at_operand=True)
    if parsed.rest:  # a command for the remote machine: judged like a local one
        effects.nest_code(effects.joined(parsed.rest), "ssh", env)
    env.rate(MODERATE, f"{name} connects to another machine")


def _export(name: str, args: list[Word], command: Command, env: Env) -> None:
    for word in args:
        if "=" in word.text and not is_option(word):
            effects.assignment(word, env)
    env.rate(SAFE, f"{name} sets shell variables")


def _alias(name: str, args: list[Word], command: Command, env: Env) -> None:
    for word in args:
        _, eq, value = word.text.partition("=")
        if eq and value:
            code = Word(text=value, raw=value, parameters=word.parameters, substitution=word.substitution)
            effects.nest_code(code, "alias", env)
    env.rate(SAFE, "alias defines a shortcut")


RULES = {
    **dict.fromkeys(t.SHELLS, _shell), "source": _source, ".": _source, "eval": _eval,
    **dict.fromkeys(t.INTERPRETERS, _interpreter), **dict.fromkeys(t.AWKS, _awk), "sed": _sed, "gsed": _sed,
    "powershell": _powershell, "pwsh": _powershell, "cmd": _cmd, "ssh": _ssh, "alias": _alias,
    **dict.fromkeys(("export", "declare", "typeset", "readonly", "local"), _export),
}
