"""The rules planner's package intents: install, uninstall, upgrade, update everything, with Homebrew,
apt, dnf or winget - a check that the manager (or the package) is there, the action, then a verification."""
from __future__ import annotations

import os
import re
import shlex

from .apps import DEBIAN, FEDORA, MACOS, MANAGER, WINDOWS, App, find_app
from .planning import Plan, Step, Unsupported

_SPLIT = re.compile(r"\s*(?:,|&|\band\b|\bplus\b)\s*")
_NEEDS_ROOT = {DEBIAN, FEDORA}
_EXAMPLES = ["install chrome", "install git and node", "uninstall firefox"]


def _sudo(family: str) -> str:
    """Linux package managers need root: the server's own root needs no sudo; otherwise `sudo -n`
    (never a password prompt: the sandbox has no terminal, so it fails fast instead of hanging)."""
    if family in _NEEDS_ROOT and hasattr(os, "geteuid") and os.geteuid() != 0:
        return "sudo -n "
    return ""


def _manager_check(family: str) -> Step:
    command = {MACOS: "which brew", DEBIAN: "command -v apt-get", FEDORA: "command -v dnf",
               WINDOWS: "winget --version"}[family]
    name = {MACOS: "homebrew"}.get(family, MANAGER[family])
    return Step(f"check if {name} is installed", command, (1, 2))


def _package_or_fail(app: App, family: str) -> str:
    package = app.package(family)
    if package is None:
        raise Unsupported(f"{app.label} is not available from {MANAGER[family]} on this system; install it from "
                          "its vendor's site.", _EXAMPLES)
    return package


def _installed_check(app: App, package: str, family: str) -> str:
    if family == MACOS:
        if package.startswith("--cask") and app.mac_app:
            return "ls -la /Applications/" + app.mac_app.replace(" ", "\\ ")
        return f"brew list {package}" if package.startswith("--cask") else f"brew list --versions {package}"
    if family == DEBIAN:
        return f"dpkg-query -W {package}"
    if family == FEDORA:
        return f"rpm -q {package}"
    return f"winget list --id {package} -e"


def _absent_check(app: App, package: str, family: str) -> str:
    if family == MACOS and package.startswith("--cask") and app.mac_app:
        return f"test ! -e {shlex.quote('/Applications/' + app.mac_app)}"
    if family == MACOS:
        return f"! brew list {package} >/dev/null 2>&1"
    if family == DEBIAN:
        return f"! dpkg-query -W -f='${{Status}}' {package} 2>/dev/null | grep -q 'install ok installed'"
    if family == FEDORA:
        return f"! rpm -q {package} >/dev/null 2>&1"
    return f"! winget list --id {package} -e"


def _install(app: App, family: str) -> list[Step]:
    package = _package_or_fail(app, family)
    label = app.label.lower()
    steps = [_manager_check(family)]
    if family == DEBIAN:
        steps.append(Step("refresh the package index", f"{_sudo(family)}apt-get update", (5, 60)))
    command = {MACOS: f"brew install {package}", DEBIAN: f"{_sudo(family)}apt-get install -y {package}",
               FEDORA: f"{_sudo(family)}dnf install -y {package}",
               WINDOWS: f"winget install --id {package} -e --accept-package-agreements --accept-source-agreements"}
    shown = package.replace("--cask ", "")
    named = label if shown.lower() in label.replace(" ", "-") or family in (MACOS, WINDOWS) else \
        f"{label} (package {shown})"
    steps.append(Step(f"install {named}", command[family], (30, 180)))
    steps.append(Step("verify installation", _installed_check(app, package, family), (1, 2)))
    return steps


def _uninstall(app: App, family: str) -> list[Step]:
    package = _package_or_fail(app, family)
    command = {MACOS: f"brew uninstall {package}", DEBIAN: f"{_sudo(family)}apt-get remove -y {package}",
               FEDORA: f"{_sudo(family)}dnf remove -y {package}", WINDOWS: f"winget uninstall --id {package} -e"}
    return [Step(f"check that {app.label.lower()} is installed", _installed_check(app, package, family), (1, 2)),
            Step(f"uninstall {app.label.lower()}", command[family], (10, 60)),
            Step("verify removal", _absent_check(app, package, family), (1, 2))]


def _upgrade(app: App, family: str) -> list[Step]:
    package = _package_or_fail(app, family)
    command = {MACOS: f"brew upgrade {package}",
               DEBIAN: f"{_sudo(family)}apt-get install --only-upgrade -y {package}",
               FEDORA: f"{_sudo(family)}dnf upgrade -y {package}",
               WINDOWS: f"winget upgrade --id {package} -e --accept-package-agreements --accept-source-agreements"}
    verify = f"{app.binary} --version" if app.binary and not package.startswith("--cask") else \
        _installed_check(app, package, family)
    return [Step(f"check that {app.label.lower()} is installed", _installed_check(app, package, family), (1, 2)),
            Step(f"upgrade {app.label.lower()}", command[family], (20, 180)),
            Step("verify the installed version", verify, (1, 2))]


def _update_all(family: str) -> list[Step]:
    sudo = _sudo(family)
    steps = [_manager_check(family)]
    if family == MACOS:
        steps += [Step("update homebrew", "brew update", (10, 60)), Step("upgrade every package", "brew upgrade",
                                                                         (60, 600))]
    elif family == DEBIAN:
        steps += [Step("refresh the package index", f"{sudo}apt-get update", (5, 60)),
                  Step("upgrade every package", f"{sudo}apt-get upgrade -y", (60, 900))]
    elif family == FEDORA:
        steps += [Step("upgrade every package", f"{sudo}dnf upgrade -y", (60, 900))]
    else:
        steps += [Step("upgrade every package",
                       "winget upgrade --all --accept-package-agreements --accept-source-agreements", (60, 900))]
    return steps


def _apps(names: str) -> list[App]:
    found = []
    for name in _SPLIT.split(names):
        name = re.sub(r"^(?:the|a|an)\s+", "", name.strip())
        name = re.sub(r"\s+(?:app|application|browser|package)$", "", name)
        if not name:
            continue
        app = find_app(name)
        if app is None:
            raise Unsupported(f"{name[:80]!r} does not look like an application or package name.",
                              _EXAMPLES)
        found.append(app)
    return found


_ALL = re.compile(r"^(?:everything|all|all (?:my |the )?(?:packages|apps|applications|software)|"
                  r"(?:my |the )?(?:system|packages|apps|software))$")


def packages(text: str, request: str, family: str) -> Plan | None:
    if re.fullmatch(r"(?:update|upgrade)(?: (?:everything|all|all (?:my |the )?(?:packages|apps|applications|"
                    r"software)|(?:my |the )?(?:system|packages|apps|software)))?", text):
        return Plan("update_all", _update_all(family))
    match = re.fullmatch(r"(install|get|set ?up|download and install|add|uninstall|remove|delete|purge|upgrade|"
                         r"update)\s+(.+)", text)
    if not match:
        return None
    verb, rest = match.groups()
    if verb in ("update", "upgrade") and _ALL.match(rest):
        return Plan("update_all", _update_all(family))
    apps = _apps(rest)
    if not apps:
        return None
    steps: list[Step] = []
    if verb in ("uninstall", "remove", "delete", "purge"):
        intent = "uninstall"
        for app in apps:
            steps += _uninstall(app, family)
    elif verb in ("upgrade", "update"):
        intent = "upgrade"
        for app in apps:
            steps += _upgrade(app, family)
    else:
        intent = "install"
        for app in apps:
            steps += [s for s in _install(app, family) if s.command not in {k.command for k in steps}
                      or s.description == "verify installation"]
    return Plan(intent, steps)
