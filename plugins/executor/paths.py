"""What a path argument points at, for the risk rules: protected locations, devices, secrets.

Paths are judged as the shell would see them after `cd`s earlier in the same
command (`cd / && rm -rf *` deletes `/*`), with `~`, `$HOME` and `${HOME}`
read as the home directory and `{a,b}` brace alternatives expanded.
"""
from __future__ import annotations

import posixpath
import re

from .shell import Word

DYNAMIC = "\x00dynamic"  # a working directory only known at run time (`cd "$X"`, `cd -`)
HOME = "/home/\x00you"  # stands for the home directory; shown as "~"
_GLOB = re.compile(r"[*?\[]")
_HOME_PREFIX = re.compile(r"^\$(?:\{HOME(?:[:?+=#%/^,-][^}]*)?\}|HOME)(?=/|$)")
_BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")
# Top-level directories whose loss (or a permission change of) breaks the system or a user.
SYSTEM_TOP = {"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt", "proc",
              "root", "run", "sbin", "snap", "srv", "sys", "usr", "var", "applications", "library", "system", "users",
              "volumes", "private", "cores", "nix"}
# ... and those whose direct children are just as vital (/usr/lib, /etc/ssh, /home/alice, /var/log).
SYSTEM_SECOND = {"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "opt", "proc", "root", "sbin",
                 "snap", "sys", "usr", "var", "applications", "library", "system", "users", "private", "nix"}
_WINDOWS = re.compile(r"^(?:[a-z]:|%\w+%|\$env:\w+)", re.I)
_WINDOWS_PROTECTED = re.compile(
    r"^(?:[a-z]:/?(?:\*.*)?|[a-z]:/(?:windows|program files(?: \(x86\))?|programdata|users)(?:/[^/]*)?/?"
    r"|%(?:systemroot|windir|systemdrive|userprofile|homepath|programfiles|appdata)%.*"
    r"|\$env:(?:systemroot|windir|systemdrive|userprofile|homepath|programfiles|appdata).*)$", re.I)
_BLOCK_DEVICE = re.compile(r"^/dev/(?:sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|disk\d|rdisk\d|md\d|dm-\d|"
                           r"loop\d|sr\d|nbd\d|mapper/|block/|root$|mem$|kmem$|port$|fd\d)")
_HARMLESS_DEVICES = ("/dev/null", "/dev/zero", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty", "/dev/full",
                     "/dev/random", "/dev/urandom", "/dev/ptmx")
_SYSTEM_WRITE = re.compile(r"^/(?:etc|usr|bin|sbin|lib\w*|boot|sys|system|library|opt|root|private/etc|"
                           r"var/(?!tmp(?:/|$)))(?:/|$)", re.I)
_STARTUP_FILES = re.compile(r"^/home/\x00you/(?:\.(?:bash_profile|bashrc|profile|zshrc|zprofile|zshenv|bash_login|"
                            r"bash_logout|login|cshrc|tcshrc|config/fish/config\.fish)|\.ssh/.*)$")
_SECRETS = re.compile(r"^(?:/etc/(?:shadow|gshadow|sudoers|master\.passwd)|/etc/ssh/ssh_host_.*_key|"
                      r"/home/\x00you/\.(?:ssh/id_[^/]*|aws/credentials|netrc|pgpass|docker/config\.json|kube/config|"
                      r"gnupg/.*))$")


def show(path: str) -> str:
    return "~" + path[len(HOME):] if path.startswith(HOME) else path


def change_directory(cwd: str, word: Word | None) -> str:
    """The working directory after `cd word` (no word: home)."""
    if word is None:
        return HOME
    if word.substitution or word.process_substitution or word.text in ("-", "~+", "~-"):
        return DYNAMIC
    resolved = resolve(word, cwd)
    return DYNAMIC if resolved is None else resolved[0]


def resolve(word: Word, cwd: str) -> list[str] | None:
    """The paths a word may stand for (brace alternatives), absolute or relative to the workspace;
    None when they depend on run time (a substitution, an unknown leading variable)."""
    if word.substitution or word.process_substitution:
        return None
    text = word.text
    leading = word.leading_parameter
    if leading == "HOME":
        text = _HOME_PREFIX.sub("~", text)
    elif leading == "PWD":
        text = re.sub(r"^\$(?:\{PWD\}|PWD)", ".", text)
    elif leading is not None:
        return None
    paths = []
    for alternative in _braces(text):
        if alternative.startswith("~"):
            user, _, rest = alternative[1:].partition("/")
            if user in ("+", "-"):
                return None
            alternative = (HOME if not user else f"/home/{user}") + ("/" + rest if rest else "")
        if _WINDOWS.match(alternative) or _WINDOWS.match(word.raw.strip("'\"")):
            paths.append(re.sub(r"[\\/]+", "/", word.raw.strip("'\"")).lower())
            continue
        if not alternative.startswith("/"):
            if cwd == DYNAMIC:
                return None
            alternative = posixpath.join(cwd, alternative)
        paths.append(_normal(alternative))
    return paths


def _normal(path: str) -> str:
    if not path.startswith("/"):
        return posixpath.normpath(path)
    return "/" + posixpath.normpath(path).lstrip("/")


def _braces(text: str, limit: int = 64) -> list[str]:
    out, pending = [], [text]
    while pending and len(out) + len(pending) <= limit:
        item = pending.pop()
        match = _BRACES.search(item)
        if not match:
            out.append(item)
            continue
        for choice in match.group(1).split(","):
            pending.append(item[:match.start()] + choice + item[match.end():])
    return out + pending


def protected(word: Word, cwd: str) -> str | None:
    """Why deleting (or re-permissioning) this path would be catastrophic, else None."""
    paths = resolve(word, cwd)
    if paths is None:
        return f"{word.raw} (a path only known at run time; empty, it would mean /)"
    for path in paths:
        reason = _protected(path)
        if reason:
            return reason
    return None


def _protected(path: str) -> str | None:
    if _WINDOWS.match(path):
        return f"{path} (a Windows system or profile folder)" if _WINDOWS_PROTECTED.match(path) else None
    if not path.startswith("/"):
        if path == ".." or path.startswith("../"):
            return f"{path} (outside the working directory)"
        return None
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "/ (the whole filesystem)"
    first = parts[0].lower()
    if _GLOB.search(parts[0]):
        return f"{show(path)} (it matches top-level directories)"
    if len(parts) == 1 and first in SYSTEM_TOP:
        return f"{show(path)} (a system directory)"
    if len(parts) == 2 and first in SYSTEM_SECOND:
        if path == HOME:
            return "~ (your home directory)"
        return f"{show(path)} (a system or home directory)"
    if len(parts) == 2 and first in SYSTEM_TOP and _GLOB.search(parts[1]):
        return f"{show(path)} (it matches system directories)"
    if len(parts) == 3 and first in ("home", "users") and _GLOB.search(parts[2]):
        return f"{show(path)} (everything in a home directory)"
    return None


def write_concern(word: Word, cwd: str) -> tuple[str, str] | None:
    """("block" | "dangerous" | "moderate", reason) for writing to this path."""
    paths = resolve(word, cwd)
    if paths is None:
        return "dangerous", f"writes to {word.raw}, a path only known at run time"
    worst: tuple[str, str] | None = None
    for path in paths:
        found = _write_concern(path)
        if worst is None or _rank(found[0]) > _rank(worst[0]):
            worst = found
    return worst


def _rank(level: str) -> int:
    return {"moderate": 0, "dangerous": 1, "block": 2}[level]


def _write_concern(path: str) -> tuple[str, str]:
    if path.startswith(("/dev/tcp/", "/dev/udp/")):
        return "block", f"opens a network connection through {path} (a reverse shell pattern)"
    if path in _HARMLESS_DEVICES or path.startswith("/dev/fd/"):
        return "moderate", ""
    if _BLOCK_DEVICE.match(path):
        return "block", f"writes to the block device {path}"
    if path.startswith("/dev/"):
        return "dangerous", f"writes to the device {path}"
    if path == "/proc/sysrq-trigger":
        return "block", "triggers kernel actions through /proc/sysrq-trigger"
    if path.startswith(("/proc/", "/sys/")):
        return "dangerous", f"changes kernel settings ({path})"
    if _SYSTEM_WRITE.match(path):
        return "dangerous", f"writes the system file {path}"
    if _STARTUP_FILES.match(path):
        return "dangerous", f"changes {show(path)} (shell start-up or SSH configuration)"
    if _WINDOWS.match(path):
        return ("dangerous", f"writes {path} (a Windows system folder)") if _WINDOWS_PROTECTED.match(path) \
            else ("moderate", f"writes {path}")
    if protected_path := _protected(path):
        return "dangerous", f"writes {protected_path}"
    return "moderate", f"writes {show(path)}"


def device_read(word: Word, cwd: str) -> str | None:
    paths = resolve(word, cwd) or []
    for path in paths:
        if _BLOCK_DEVICE.match(path):
            return path
    return None


def secret(word: Word, cwd: str) -> str | None:
    for path in resolve(word, cwd) or []:
        if _SECRETS.match(path):
            return show(path)
    return None


def is_device_path(word: Word) -> bool:
    return word.text.startswith("/dev/") and word.text not in _HARMLESS_DEVICES
