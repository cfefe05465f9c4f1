"""Rules for programs that delete, move, copy, re-permission or format: targets judged after `cd`s."""
from __future__ import annotations

import re

from . import effects, paths
from . import program_tables as t
from .arguments import parse
from .rating import DANGEROUS, MODERATE, SAFE, Env
from .shell import Command, Word


def _rm(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args)
    recursive = parsed.has("r", "R", "recursive")
    if parsed.has("no-preserve-root"):
        env.block("rm --no-preserve-root lets it delete /")
    for target in parsed.operands:
        if reason := paths.protected(target, env.cwd):
            env.block(f"rm deletes {reason}{' recursively' if recursive else ''}")
    env.rate(DANGEROUS, "rm deletes directories recursively" if recursive else "rm deletes files")


def _windows_delete(name: str, args: list[Word], command: Command, env: Env) -> None:
    switches = {a.text.lower() for a in args if re.fullmatch(r"/[a-zA-Z?]", a.text)}
    recursive = "/s" in switches or any(a.text.lower() in ("-recurse", "-r") for a in args)
    if name == "rmdir" and not switches:
        env.rate(DANGEROUS, "rmdir deletes empty directories")
        return
    for target in args:
        if re.fullmatch(r"/[a-zA-Z?]", target.text) or target.text.startswith("-"):
            continue
        if reason := paths.protected(target, env.cwd):
            env.block(f"{name} deletes {reason}{' recursively' if recursive else ''}")
    env.rate(DANGEROUS, f"{name} deletes files" + (" recursively" if recursive else ""))


def _posix_delete(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="sr" if name == "truncate" else "")
    for target in parsed.operands:
        if paths.is_device_path(target) and name in ("truncate", *t.SHREDDERS):
            env.block(f"{name} overwrites the device {target.text}")
        elif name in t.SHREDDERS and (reason := paths.protected(target, env.cwd)):
            env.block(f"{name} destroys {reason}")
    env.rate(DANGEROUS, f"{name} {t.DANGEROUS_PROGRAMS.get(name, 'destroys file contents')}")


def _permissions(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, long_values=("reference", "from"))
    lowered = {a.text.lower() for a in args}
    recursive = parsed.has("R", "recursive") or bool(lowered & {"/t", "/r"})
    targets = [w for w in parsed.operands if not re.fullmatch(r"/[a-zA-Z]", w.text)]
    if name in ("chmod", "chown", "chgrp", "chflags") and not parsed.value("reference"):
        targets = targets[1:]  # the mode or owner
    targets = [w for w in targets if not w.text.startswith(("+", "="))]
    for target in targets:
        reason = paths.protected(target, env.cwd)
        if reason and (recursive or _top_level(reason)):
            env.block(f"{name} changes permissions of {reason}{' recursively' if recursive else ''}")
    env.rate(DANGEROUS, f"{name} changes file permissions or ownership")


def _top_level(reason: str) -> bool:
    return "(the whole filesystem)" in reason or "(a system directory)" in reason or "home directory)" in reason \
        or "matches top-level" in reason or "Windows" in reason


def _mv(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="tS", long_values=("target-directory", "suffix", "backup"))
    destination = parsed.value("t", "target-directory")
    sources = parsed.operands if destination is not None else parsed.operands[:-1]
    destination = destination or (parsed.operands[-1] if parsed.operands else None)
    for source in sources:
        if reason := paths.protected(source, env.cwd):
            env.block(f"{name} moves {reason} away")
    if destination is not None:
        if destination.text == "/dev/null":
            env.rate(DANGEROUS, f"{name} onto /dev/null destroys the files")
        else:
            effects.writes(destination, env)
    env.rate(MODERATE, f"{name} moves files")


def _copy(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args, short_values="tSm" if name != "rsync" else "eBf",
                   long_values=("target-directory", "suffix", "mode", "rsh", "exclude", "include", "filter"))
    destination = parsed.value("t", "target-directory") or (parsed.operands[-1] if len(parsed.operands) > 1 else None)
    for source in parsed.operands[:-1] if destination is not None else parsed.operands:
        if secret := paths.secret(source, env.cwd):
            env.rate(DANGEROUS, f"{name} copies the secret file {secret}")
    if destination is not None:
        if name == "rsync" and any(f.startswith("delete") for f in parsed.flags | set(parsed.values)):
            if reason := paths.protected(destination, env.cwd):
                env.block(f"rsync --delete empties {reason}")
            env.rate(DANGEROUS, "rsync --delete removes files missing from the source")
        effects.writes(destination, env)
    env.rate(MODERATE, f"{name} copies files")


def _archive(name: str, args: list[Word], command: Command, env: Env) -> None:
    """tar -C DIR / unzip -d DIR: extraction writes into DIR."""
    parsed = parse(args, short_values="Cfd" if name == "tar" else "dx", long_values=("directory", "file"))
    directory = parsed.value("C", "directory") if name == "tar" else parsed.value("d")
    if directory is not None:
        effects.apply(paths.write_concern(directory, env.cwd) or ("moderate", ""), env)
    env.rate(MODERATE, f"{name} packs or unpacks files")


def write_targets(name: str, args: list[Word], env: Env) -> None:
    """mkdir, touch and the like: every operand is written."""
    if name not in ("mkdir", "touch"):
        return
    for word in parse(args, short_values="m" if name == "mkdir" else "drt").operands:
        effects.writes(word, env)


def _tee(name: str, args: list[Word], command: Command, env: Env) -> None:
    for word in parse(args, long_values=("output-error",)).operands:
        effects.writes(word, env)
    env.rate(SAFE, "tee copies its input")


def _dd(name: str, args: list[Word], command: Command, env: Env) -> None:
    operands = {w.text.split("=", 1)[0]: w for w in args if "=" in w.text}
    source, target = operands.get("if"), operands.get("of")
    if source is not None:
        source_word = Word(text=source.text.split("=", 1)[1], raw=source.raw.split("=", 1)[-1],
                           parameters=source.parameters, substitution=source.substitution)
        if device := paths.device_read(source_word, env.cwd):
            env.block(f"dd reads the raw device {device}")
    if target is not None:
        target_word = Word(text=target.text.split("=", 1)[1], raw=target.raw.split("=", 1)[-1],
                           parameters=target.parameters, substitution=target.substitution)
        if paths.is_device_path(target_word) and target_word.text not in ("/dev/stdout", "/dev/stderr"):
            env.block(f"dd writes to the device {target_word.text}")
        effects.writes(target_word, env)
    env.rate(MODERATE, "dd copies raw data")


def formatter(name: str, args: list[Word], command: Command, env: Env) -> None:
    env.block(f"{name} formats or wipes a disk")


def _killall5(name: str, args: list[Word], command: Command, env: Env) -> None:
    env.block("killall5 signals every process")


def _partitioner(name: str, args: list[Word], command: Command, env: Env) -> None:
    parsed = parse(args)
    if parsed.has("l", "list", "print", "p") or (name == "parted" and any(a.text == "print" for a in args)):
        env.rate(SAFE, f"{name} lists partitions")
    else:
        env.rate(DANGEROUS, f"{name} changes disk partitions")


def _diskutil(name: str, args: list[Word], command: Command, env: Env) -> None:
    verb = args[0].text.lower() if args else ""
    if verb in ("list", "info", "activity", "listfilesystems") or (verb == "apfs" and len(args) > 1
                                                                   and args[1].text.lower() == "list"):
        env.rate(SAFE, "diskutil shows disks")
    elif verb.startswith(("erase", "zero", "random", "secureerase", "partitiondisk", "reformat")) or (
            verb == "apfs" and len(args) > 1 and args[1].text.lower().startswith("delete")):
        env.block(f"diskutil {args[0].text} erases a disk")
    else:
        env.rate(DANGEROUS, f"diskutil {verb} changes disks")


def _hdparm(name: str, args: list[Word], command: Command, env: Env) -> None:
    if any(a.text.startswith(("--security-erase", "--trim-sector-ranges", "--dco-restore", "--write-sector"))
           for a in args):
        env.block("hdparm erases or overwrites a disk")
    env.rate(DANGEROUS, "hdparm changes disk settings")


def _vssadmin(name: str, args: list[Word], command: Command, env: Env) -> None:
    verb = args[0].text.lower() if args else ""
    if verb in ("delete", "resize"):
        env.block("vssadmin deletes shadow copies (the system's backups)")
    elif verb == "list":
        env.rate(SAFE, "vssadmin lists shadow copies")
    else:
        env.rate(DANGEROUS, "vssadmin changes shadow copies")


def _kill(name: str, args: list[Word], command: Command, env: Env) -> None:
    signal_seen = False
    pids: list[str] = []
    i = 0
    while i < len(args):
        text = args[i].text
        if text == "--":
            pids += [w.text for w in args[i + 1:]]
            break
        if text in ("-l", "-L", "--list", "--table"):
            env.rate(SAFE, "kill lists signals")
            return
        if text in ("-s", "-n", "--signal"):
            signal_seen, i = True, i + 2
            continue
        if text.startswith("-") and not signal_seen:
            signal_seen = True
        else:
            pids.append(text)
        i += 1
    if "-1" in pids:
        env.block("kill signals every process (pid -1)")
    if "1" in pids:
        env.block("kill signals init (pid 1)")
    env.rate(DANGEROUS, "kill stops processes")


RULES = {
    "rm": _rm, "del": _windows_delete, "erase": _windows_delete, "rd": _windows_delete, "rmdir": _windows_delete,
    "remove-item": _windows_delete, "ri": _windows_delete, "unlink": _posix_delete, "truncate": _posix_delete,
    **dict.fromkeys(t.SHREDDERS, _posix_delete), **dict.fromkeys(t.PERMISSIONS, _permissions),
    "mv": _mv, "move-item": _mv, "cp": _copy, "install": _copy, "ln": _copy, "rsync": _copy, "copy-item": _copy,
    "scp": _copy, "tee": _tee, "dd": _dd, "tar": _archive, "unzip": _archive,
    **dict.fromkeys(t.FORMATTERS, formatter), **dict.fromkeys(t.PARTITIONERS, _partitioner),
    "diskutil": _diskutil, "hdparm": _hdparm, "vssadmin": _vssadmin, "kill": _kill, "killall5": _killall5,
}
