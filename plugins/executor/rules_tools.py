"""Rules for network tools, git, package managers, find and read-only programs."""
from __future__ import annotations

import re

from . import effects, paths, programs
from . import program_tables as t
from .arguments import is_option, parse, program_name
from .rating import DANGEROUS, MODERATE, SAFE, Env
from .shell import Command, Word


def _netcat(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="pswiqxXIOTVMW", long_values=("sh-exec", "lua-exec", "exec"))
    if parsed.has("e", "c", "exec", "sh-exec", "lua-exec"):
        env.block(f"{name} runs a program for a network peer (-e/-c), a reverse or bind shell")
    elif parsed.has("l", "listen"):
        env.rate(DANGEROUS, f"{name} listens for network connections")
    else:
        env.rate(MODERATE, f"{name} opens a network connection")


def _socat(name: str, args: list[Word], command: Command, env: Env) -> None:
    addresses = " ".join(a.text.lower() for a in args if not is_option(a))
    if re.search(r"(?:^|[\s,!])(?:exec|system):", addresses):
        env.block("socat connects a program to a network peer (exec:/system:), a reverse or bind shell")
    elif "listen" in addresses:
        env.rate(DANGEROUS, "socat listens for network connections")
    else:
        env.rate(MODERATE, "socat relays data over the network")


_CURL_VALUES = ("output", "upload-file", "data", "data-binary", "data-raw", "data-urlencode", "data-ascii", "form",
                "form-string", "header", "request", "user", "user-agent", "referer", "cookie", "cookie-jar", "config",
                "proxy", "url", "write-out", "max-time", "connect-timeout", "range", "continue-at", "cert", "key",
                "cacert", "retry", "speed-limit", "speed-time", "time-cond", "limit-rate", "max-filesize", "resolve",
                "dump-header", "json", "oauth2-bearer", "output-dir", "proto", "interface", "trace", "trace-ascii")


def _curl(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="oTdFHXuAebcKxwmrCEyYzD", long_values=_CURL_VALUES)
    uploads = parsed.all_values("T", "upload-file")
    for word in parsed.all_values("d", "data", "data-binary", "data-urlencode", "data-ascii", "F", "form", "json"):
        _, at, path = word.text.rpartition("@")
        if at and path:
            uploads.append(Word(text=path, raw=path, parameters=word.parameters, substitution=word.substitution))
    for word in uploads:
        if secret := paths.secret(word, env.cwd):
            env.block(f"curl uploads the secret file {secret}")
        env.rate(DANGEROUS, f"curl uploads the local file {word.text}")
    for word in parsed.all_values("o", "output", "c", "cookie-jar", "D", "dump-header", "trace", "trace-ascii"):
        if word.text != "-":
            effects.writes(word, env)
    if parsed.has("O", "remote-name", "remote-name-all", "J"):
        env.rate(MODERATE, "curl saves a download to a file")
        for url in parsed.operands:
            saved = url.text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            if saved and "." in saved:
                env.wrote(Word(text=saved, raw=saved), None)
    env.rate(SAFE, "curl fetches a URL")


def _wget(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="OoaPeUtTwQiBDlAR", long_values=("output-document", "post-file", "body-file",
                                                                         "directory-prefix", "output-file", "user",
                                                                         "password", "header", "tries", "timeout"))
    for word in parsed.all_values("post-file", "body-file"):
        if secret := paths.secret(word, env.cwd):
            env.block(f"wget uploads the secret file {secret}")
        env.rate(DANGEROUS, f"wget uploads the local file {word.text}")
    document = parsed.value("O", "output-document")
    if document is not None and document.text == "-":
        env.rate(SAFE, "wget fetches a URL to standard output")
    elif document is not None:
        effects.writes(document, env)
        env.rate(MODERATE, "wget saves a download to a file")
    elif not parsed.has("spider"):
        env.rate(MODERATE, "wget saves a download to a file")
        for url in parsed.operands:
            saved = url.text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            if saved and "." in saved:
                env.wrote(Word(text=saved, raw=saved), None)


def subcommands(name: str, args: list[Word], command: Command, env: Env) -> None:
    table = t.SUBCOMMANDS[t.SUBCOMMAND_ALIASES.get(name, name)]
    operands = [a for a in args if not is_option(a)]
    if not operands:
        flags = [a.text for a in args]
        if any(f in table and table[f] == SAFE for f in flags) or not flags:
            env.rate(SAFE, f"{name} shows information")
        else:
            env.rate(MODERATE, f"{name} {' '.join(flags)[:40]} {t.INSTALL_REASON}")
        return
    sub = operands[0].text.lower()
    if len(operands) > 1 and f"{sub}-{operands[1].text.lower()}" in table:
        sub = f"{sub}-{operands[1].text.lower()}"
    risk = table.get(sub, MODERATE)
    if name == "docker" and sub in ("run", "create"):
        _docker_run(args, env)
    if risk == SAFE:
        env.rate(SAFE, f"{name} {sub} only shows information")
    elif risk == DANGEROUS:
        env.rate(DANGEROUS, f"{name} {sub} {t.REMOVE_REASON}")
    else:
        env.rate(MODERATE, f"{name} {sub} {t.INSTALL_REASON}")


def _docker_run(args: list[Word], env: Env) -> None:
    parsed = parse(args, short_values="vep", long_values=("volume", "mount", "pid", "network", "net", "cap-add",
                                                           "security-opt", "device", "userns"))
    mounts = [w.text for w in parsed.all_values("v", "volume", "mount")]
    if parsed.has("privileged") or parsed.value("cap-add", "device") is not None or \
            (parsed.value("pid") is not None and parsed.value("pid").text == "host") or \
            any(m.split(":", 1)[0] in ("/", "/var/run/docker.sock", "/etc", "/root", "/home") for m in mounts):
        env.rate(DANGEROUS, "the container gets access to the host (privileged, host mounts or devices)")


_GIT_VALUES = ("git-dir", "work-tree", "namespace", "exec-path", "config-env", "super-prefix")


def _git(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="Cc", long_values=_GIT_VALUES, stop_at_operand=True)
    for setting in parsed.all_values("c"):
        key = setting.text.split("=", 1)[0].lower()
        if key.endswith(("sshcommand", "pager", "editor", "hookspath", "fsmonitor", "askpass")) or \
                key.startswith(("alias.", "core.gitproxy", "filter.", "diff.external")):
            env.rate(DANGEROUS, f"git -c {key} makes git run another program")
    if not parsed.operands:
        env.rate(SAFE, "git shows its usage")
        return
    sub = parsed.operands[0].text.lower()
    rest = parsed.rest
    flags = {w.text for w in rest if is_option(w)}
    operands = [w.text for w in rest if not is_option(w)]
    if sub in t.GIT_DANGEROUS:
        env.rate(DANGEROUS, f"git {sub} rewrites history or references")
    elif sub in t.GIT_SAFE:
        env.rate(SAFE, f"git {sub} only reads the repository")
    elif sub == "push" and (flags & {"-f", "--force", "--force-with-lease", "--mirror", "--delete", "-d",
                                     "--prune"} or any(o.startswith((":", "+")) for o in operands)):
        env.rate(DANGEROUS, "git push overwrites or deletes remote history")
    elif sub == "reset" and "--hard" in flags:
        env.rate(DANGEROUS, "git reset --hard discards local changes")
    elif sub == "clean":
        dry = flags & {"-n", "--dry-run"}
        env.rate(SAFE if dry else DANGEROUS, "git clean lists untracked files" if dry else
                 "git clean deletes untracked files")
    elif sub in ("checkout", "restore") and ("-f" in flags or "--force" in flags or "." in operands or
                                             ("--" in [w.text for w in rest] and sub == "checkout")):
        env.rate(DANGEROUS, f"git {sub} discards local changes")
    elif sub in ("branch", "tag", "stash", "remote", "worktree", "config", "submodule", "notes"):
        _git_listing(sub, flags, operands, env)
    else:
        env.rate(MODERATE, f"git {sub} changes the repository or the working tree")


def _git_listing(sub: str, flags: set[str], operands: list[str], env: Env) -> None:
    deleting = {"-d", "-D", "--delete"} & flags or (operands[:1] and operands[0] in ("drop", "clear", "remove",
                                                                                       "rm", "prune"))
    if sub == "stash" and (not operands or operands[0] in ("push", "save", "pop", "apply", "branch")):
        env.rate(MODERATE, "git stash sets local changes aside or brings them back")
    elif deleting:
        env.rate(DANGEROUS, f"git {sub} deletes references or stashes")
    elif sub == "config" and flags & {"--global", "--system"} and not flags & {"--get", "--list", "-l", "--get-all"}:
        env.rate(DANGEROUS, "git config changes settings outside this repository")
    elif sub == "config" and (flags & {"--get", "--list", "-l", "--get-all", "--show-origin"} or len(operands) <= 1):
        env.rate(SAFE, "git config reads settings")
    elif not operands or operands[0] in ("list", "show", "-v", "status", "get-url") or flags & {"-l", "--list", "-a",
                                                                                                "-r", "-v", "-vv"}:
        env.rate(SAFE, f"git {sub} lists")
    else:
        env.rate(MODERATE, f"git {sub} changes the repository")


def _find(name: str, args: list[Word], command: Command, env: Env) -> None:
    roots: list[Word] = []
    i = 0
    while i < len(args) and args[i].text in ("-H", "-L", "-P") or (i < len(args) and args[i].text.startswith("-O")):
        i += 1
    while i < len(args) and not args[i].text.startswith(("-", "(", "!", ")")):
        roots.append(args[i])
        i += 1
    deletes = False
    while i < len(args):
        text = args[i].text
        if text == "-delete":
            deletes = True
        elif text in ("-exec", "-execdir", "-ok", "-okdir"):
            end = i + 1
            while end < len(args) and args[end].text not in (";", "+"):
                end += 1
            inner = args[i + 1:end]
            if inner:
                if not inner[0].dynamic and program_name(inner[0].text) in t.DELETERS:
                    deletes = True
                programs.run(inner, command, env)
            i = end
        elif text in ("-fprint", "-fprint0", "-fprintf", "-fls") and i + 1 < len(args):
            effects.writes(args[i + 1], env)
        i += 1
    if deletes:
        for root in roots or [Word(text=".", raw=".")]:
            if reason := paths.protected(root, env.cwd):
                env.block(f"find deletes everything it finds under {reason}")
        env.rate(DANGEROUS, "find deletes what it finds")
    else:
        env.rate(SAFE, "find lists files")


def reader(name: str, args: list[Word], env: Env) -> None:
    """A read-only program; it may still read a secret or a raw disk, or set something (hostname, date)."""
    if name == "hostname" and any(not is_option(a) for a in args):
        env.rate(DANGEROUS, "hostname changes the host name")
        return
    if name == "date" and any(a.text in ("-s", "--set") or a.text.startswith("--set=") for a in args):
        env.rate(DANGEROUS, "date sets the clock")
        return
    if name == "sort" and any(a.text in ("-o",) or a.text.startswith("--output") for a in args):
        env.rate(MODERATE, "sort writes its output to a file")
    for word in args:
        if is_option(word):
            continue
        if secret := paths.secret(word, env.cwd):
            env.rate(DANGEROUS, f"{name} reads the secret file {secret}")
        elif device := paths.device_read(word, env.cwd):
            env.rate(DANGEROUS, f"{name} reads the raw device {device}")
    env.rate(SAFE, f"{name} only reads")


def safe_form(name: str, args: list[Word]) -> bool:
    forms = t.SAFE_FORMS[name]
    first = next((a.text for a in args), "")
    if "READ" in forms and args and all("=" not in a.text for a in args) and not any(
            a.text in ("-w", "--write", "-p", "--load") for a in args) and name == "sysctl":
        return True
    if "GET" in forms:
        return any(a.text.lower() in ("get", "list") for a in args)
    return first in forms or (first.lower() in forms)


def _dpkg(name: str, args: list[Word], command: Command, env: Env) -> None:
    """dpkg and rpm are driven by flags: query, install, remove."""
    flags = parse(args, short_values="f" if name == "rpm" else "").flags
    removing = {"r", "P", "remove", "purge"} if name == "dpkg" else {"e", "erase"}
    installing = {"i", "install", "unpack", "configure"} if name == "dpkg" else {"i", "U", "F", "install", "upgrade",
                                                                                  "freshen"}
    if flags & removing:
        env.rate(DANGEROUS, f"{name} removes packages")
    elif flags & installing:
        env.rate(MODERATE, f"{name} installs packages")
    else:
        env.rate(SAFE, f"{name} queries packages")


RULES = {
    **dict.fromkeys(t.NETCATS, _netcat), "socat": _socat, "dpkg": _dpkg, "rpm": _dpkg, "curl": _curl,
    "wget": _wget, "git": _git, "find": _find,
}
