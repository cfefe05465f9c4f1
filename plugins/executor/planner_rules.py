"""The rules planner: common requests become check -> act -> verify steps, per OS family, with no model.

Intents: install / uninstall / upgrade applications (Homebrew, apt, dnf, winget), update everything,
show versions, git status / pull / clone / log, a Python virtual environment, a Node project, disk
usage, free memory, processes, listening ports, and `run <command>` for a literal command. Anything
else is `Unsupported`, with the closest example requests as suggestions.
"""
from __future__ import annotations

import difflib
import re
import shlex

from .apps import MACOS, WINDOWS
from .planner_packages import packages
from .planning import Plan, Step, Unsupported

__all__ = ["EXAMPLES", "Plan", "Step", "Unsupported", "literal_command", "normalise", "plan"]


EXAMPLES = [
    "install chrome", "install git and node", "uninstall firefox", "upgrade node", "update all packages",
    "show versions of git, node and python", "show the os version", "git status", "git pull",
    "git clone https://github.com/pallets/flask.git", "git log", "create a python venv",
    "create a node project named web", "disk usage", "folder size", "free memory", "list processes",
    "list listening ports", "what is listening on port 8080", "list files", "run `ls -la`",
]
_FILLER = re.compile(r"^(?:please|pls|can you|could you|would you|i want to|i'd like to|i need to|help me|"
                     r"go ahead and|let's|lets)\s+")
_TRAILING = re.compile(r"\s*(?:for me|please|now|on (?:my|this) (?:mac|machine|computer|pc|laptop))?\s*[.!?]*$")
_SPLIT = re.compile(r"\s*(?:,|&|\band\b|\bplus\b)\s*")


def normalise(request: str) -> str:
    text = " ".join(request.strip().lower().split())
    previous = None
    while previous != text:
        previous = text
        text = _FILLER.sub("", text)
        text = _TRAILING.sub("", text)
    return text


def plan(request: str, family: str) -> Plan:
    literal = literal_command(request)
    if literal is not None:
        return Plan("run", [Step("run the command", literal, (1, 30))])
    text = normalise(request)
    for matcher in _INTENTS:
        found = matcher(text, request, family)
        if found is not None:
            return found
    close = difflib.get_close_matches(text, EXAMPLES, n=5, cutoff=0.3)
    suggestions = close + [e for e in EXAMPLES if e not in close][:5 - len(close)]
    raise Unsupported(f"No plan for {request.strip()[:200]!r}: the rules planner knows installing, removing and "
                      "upgrading applications, versions, git, Python and Node projects, disk, memory, processes "
                      "and ports, and `run <command>`.", suggestions)


def literal_command(request: str) -> str | None:
    text = request.strip()
    match = re.match(r"^(?:run|execute|exec)\s*:?\s*`([^`]+)`\s*$", text, re.I) or \
        re.match(r"^(?:run|execute)\s*:\s*(.+)$", text, re.I | re.S) or re.match(r"^\$\s+(.+)$", text, re.S)
    return match.group(1).strip() if match and match.group(1).strip() else None


# --- information -------------------------------------------------------------------------------------

_VERSION_DEFAULTS = ["git", "python", "node", "npm", "docker"]
_BINARIES = {"python": "python3", "node": "node", "npm": "npm", "git": "git", "docker": "docker", "go": "go",
             "rust": "rustc", "cargo": "cargo", "java": "java", "ruby": "ruby", "pip": "pip3", "brew": "brew",
             "gcc": "gcc", "make": "make", "yarn": "yarn", "pnpm": "pnpm", "deno": "deno", "bun": "bun",
             "php": "php", "perl": "perl", "kubectl": "kubectl", "terraform": "terraform", "cmake": "cmake"}


def _versions(text: str, request: str, family: str) -> Plan | None:
    if re.search(r"\b(?:os|system|operating system|macos|windows|linux) (?:version|info)|system info|"
                 r"which os|what os", text):
        command = {MACOS: "sw_vers", WINDOWS: "ver"}.get(family, "cat /etc/os-release")
        steps = [Step("show the operating system version", command, (1, 2))]
        if family != WINDOWS:
            steps.append(Step("show the kernel version", "uname -a", (1, 2)))
        return Plan("versions", steps)
    match = re.fullmatch(r"(?:show|list|check|what are|print|get)?\s*(?:the |my )?(?:installed )?versions?"
                         r"(?:\s+(?:of|for)\s+(.+))?", text) or re.fullmatch(
        r"(?:what|which) version (?:of )?(.+?)(?: do i have| is installed)?", text) or re.fullmatch(
        r"(?:show|check) (?:the )?(.+?) versions?", text)
    if not match:
        return None
    names = [n.strip() for n in _SPLIT.split(match.group(1) or "") if n.strip()] or _VERSION_DEFAULTS
    steps = []
    for name in names:
        key = {"python3": "python", "nodejs": "node", "node.js": "node", "golang": "go", "rustc": "rust"}.get(name,
                                                                                                             name)
        binary = _BINARIES.get(key)
        if binary is None and re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,40}", key):
            binary = key
        if binary is None:
            return None
        if family == WINDOWS and binary == "python3":
            binary = "python"
        flag = "-version" if binary == "java" else ("version" if binary == "go" else "--version")
        steps.append(Step(f"show the {key} version", f"{binary} {flag} || echo '{binary} is not installed'",
                          (1, 2)))
    return Plan("versions", steps)


def _git(text: str, request: str, family: str) -> Plan | None:
    if re.fullmatch(r"(?:show |check )?(?:the )?(?:git status|status of (?:the |this )?(?:repo|repository)|"
                    r"what changed|what has changed|which files changed)", text):
        return Plan("git_status", [Step("show the repository status", "git status", (1, 2))])
    if re.fullmatch(r"(?:git pull|pull(?: the)?(?: latest)?(?: changes)?|update (?:the |this )?(?:repo|repository"
                    r"|checkout))", text):
        return Plan("git_pull", [Step("check the repository state", "git status --short --branch", (1, 2)),
                                 Step("pull the latest changes (fast-forward only)", "git pull --ff-only", (2, 30)),
                                 Step("show the latest commit", "git log -1 --oneline", (1, 2))])
    if re.fullmatch(r"(?:show )?(?:the )?(?:git log|recent commits|last commits|commit history)", text):
        return Plan("git_log", [Step("show the last 10 commits", "git log --oneline -n 10", (1, 2))])
    if re.fullmatch(r"(?:show )?(?:the )?(?:git branches|git branch|branches|list branches)", text):
        return Plan("git_branches", [Step("list branches", "git branch -a", (1, 2))])
    if re.fullmatch(r"(?:show )?(?:the )?(?:git diff|diff|uncommitted changes)", text):
        return Plan("git_diff", [Step("summarise uncommitted changes", "git diff --stat", (1, 2))])
    match = re.match(r"^\s*(?:please\s+)?(?:git\s+)?clone\s+(?:the\s+)?(?:repo(?:sitory)?\s+)?(\S+)"
                     r"(?:\s+(?:into|to|in|as)\s+(\S+))?\s*$", request.strip(), re.I)
    if not match:
        return None
    url, directory = match.group(1), match.group(2)
    if not re.fullmatch(r"(?:https?://|ssh://|git://|git@)[\w.@:/~+-]+?(?:\.git)?/?", url):
        raise Unsupported(f"{url[:120]!r} is not a git URL (https://, ssh://, git:// or git@host:path).",
                          ["git clone https://github.com/pallets/flask.git"])
    target = directory or re.sub(r"\.git$", "", url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])
    if not re.fullmatch(r"[\w.-]{1,100}", target) or target in (".", ".."):
        raise Unsupported(f"{target[:120]!r} is not a usable directory name.", ["git clone <url> into <name>"])
    clone = f"git clone {shlex.quote(url)}" + (f" {shlex.quote(directory)}" if directory else "")
    return Plan("git_clone", [Step("check that git is installed", "git --version", (1, 2)),
                              Step(f"clone {url}", clone, (5, 120)),
                              Step("verify the clone", f"git -C {shlex.quote(target)} log -1 --oneline", (1, 2))])


def _projects(text: str, request: str, family: str) -> Plan | None:
    venv = re.fullmatch(r"(?:create|make|set ?up|init(?:ialise|ialize)?|new)\s+(?:a\s+)?(?:new\s+)?(?:python\s+)?"
                        r"(?:venv|virtualenv|virtual env(?:ironment)?|python environment)"
                        r"(?:\s+(?:named|called|in|at)\s+([\w.-]+))?", text)
    if venv:
        name = venv.group(1) or ".venv"
        python = "python" if family == WINDOWS else "python3"
        inner = f"{name}/Scripts/python.exe" if family == WINDOWS else f"{name}/bin/python"
        return Plan("python_venv", [Step("check that python is installed", f"{python} --version", (1, 2)),
                                    Step(f"create the virtual environment {name}", f"{python} -m venv {name}",
                                         (3, 20)),
                                    Step("verify the virtual environment", f"{inner} --version", (1, 2))])
    node = re.fullmatch(r"(?:create|make|set ?up|init(?:ialise|ialize)?|start|new)\s+(?:a\s+)?(?:new\s+)?"
                        r"(?:node(?:\.?js)?|npm|javascript)\s+(?:project|app|package)"
                        r"(?:\s+(?:named|called|in)\s+([\w.-]+))?", text)
    if not node:
        return None
    name = node.group(1)
    steps = [Step("check that node and npm are installed", "node --version && npm --version", (1, 3))]
    if name:
        steps += [Step(f"create the directory {name}", f"mkdir -p {name}", (1, 2)),
                  Step("create package.json", f"cd {name} && npm init -y", (1, 10)),
                  Step("verify the project", f"cat {name}/package.json", (1, 2))]
    else:
        steps += [Step("create package.json", "npm init -y", (1, 10)),
                  Step("verify the project", "cat package.json", (1, 2))]
    return Plan("node_project", steps)


def _system(text: str, request: str, family: str) -> Plan | None:
    if re.search(r"\b(?:folder|directory|dir) size\b|size of (?:this|the current) (?:folder|directory)|"
                 r"what(?:'s| is) taking (?:up )?space", text):
        command = "dir" if family == WINDOWS else "du -sh * .[!.]* 2>/dev/null | sort -h | tail -n 20"
        return Plan("folder_size", [Step("show the largest entries of the current directory", command, (1, 30))])
    if re.fullmatch(r"(?:list|show)(?: (?:all|the|my))? files(?: (?:here|in (?:this|the current) "
                    r"(?:folder|directory)))?|ls", text):
        command = "dir" if family == WINDOWS else "ls -la"
        return Plan("list_files", [Step("list the files of the current directory", command, (1, 2))])
    if re.search(r"\bdisk (?:usage|space)|free (?:disk )?space|storage|how much space", text):
        command = "wmic logicaldisk get caption,freespace,size" if family == WINDOWS else "df -h"
        return Plan("disk_usage", [Step("show disk usage", command, (1, 2))])
    if re.search(r"\b(?:processes|process list|running programs|what(?:'s| is) running|top)\b", text):
        by_memory = bool(re.search(r"memory|ram", text))
        command = {MACOS: "ps aux -m | head -n 20" if by_memory else "ps aux -r | head -n 20",
                   WINDOWS: "tasklist"}.get(family, f"ps aux --sort=-%{'mem' if by_memory else 'cpu'} | head -n 20")
        return Plan("processes", [Step("list processes", command, (1, 2))])
    if re.search(r"\b(?:free )?(?:memory|ram)(?: usage)?\b", text):
        steps = {MACOS: [Step("show memory statistics", "vm_stat", (1, 2)),
                         Step("show total memory", "sysctl -n hw.memsize", (1, 2))],
                 WINDOWS: [Step("show available memory",
                                'systeminfo | findstr /C:"Total Physical Memory" /C:"Available Physical Memory"',
                                (2, 10))]}.get(family, [Step("show memory usage", "free -h", (1, 2))])
        return Plan("memory", steps)
    port = re.search(r"(?:listening on|using|on) port (\d{1,5})\b|port (\d{1,5}) (?:in use|listening)", text)
    if port:
        number = port.group(1) or port.group(2)
        if not 0 < int(number) < 65536:
            return None
        command = {MACOS: f"lsof -nP -iTCP:{number} -sTCP:LISTEN", WINDOWS: f"netstat -ano | findstr :{number}"}.get(
            family, f"ss -tlnp | grep ':{number} '")
        return Plan("port", [Step(f"show what listens on port {number}", command, (1, 2))])
    if re.search(r"\b(?:listening|open) ports\b|\bports\b.*\blisten|\blistening\b", text):
        command = {MACOS: "lsof -nP -iTCP -sTCP:LISTEN", WINDOWS: "netstat -ano | findstr LISTENING"}.get(
            family, "ss -tlnp")
        return Plan("ports", [Step("list listening ports", command, (1, 2))])
    return None


_INTENTS = (packages, _versions, _git, _projects, _system)
