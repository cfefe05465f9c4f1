"""The rules planner: common requests become check -> act -> verify steps for each OS family."""
from __future__ import annotations

import pytest

from plugins.executor import apps, planner_rules
from plugins.executor.risk import assess
from plugins.executor.service import relative_cwd


def commands(request: str, family: str) -> list[str]:
    return [s.command for s in planner_rules.plan(request, family).steps]


def test_install_chrome_on_macos_is_the_seeds_plan():
    steps = planner_rules.plan("install chrome", apps.MACOS).steps
    assert [(s.description, s.command) for s in steps] == [
        ("check if homebrew is installed", "which brew"),
        ("install google chrome", "brew install --cask google-chrome"),
        ("verify installation", "ls -la /Applications/Google\\ Chrome.app"),
    ]
    assert [assess(s.command).risk for s in steps] == ["safe", "moderate", "safe"]


@pytest.mark.parametrize("family, check, install, verify", [
    (apps.DEBIAN, "command -v apt-get", "apt-get install -y git", "dpkg-query -W git"),
    (apps.FEDORA, "command -v dnf", "dnf install -y git", "rpm -q git"),
    (apps.WINDOWS, "winget --version",
     "winget install --id Git.Git -e --accept-package-agreements --accept-source-agreements",
     "winget list --id Git.Git -e"),
    (apps.MACOS, "which brew", "brew install git", "brew list --versions git"),
])
def test_install_checks_acts_and_verifies_with_each_package_manager(family, check, install, verify):
    steps = commands("Please install git.", family)
    assert steps[0] == check and steps[-1] == verify
    assert any(c.endswith(install) for c in steps)  # `sudo -n ` in front when the server is not root


def test_uninstall_and_upgrade_verify_their_effect():
    removal = commands("uninstall firefox", apps.MACOS)
    assert removal == ["ls -la /Applications/Firefox.app", "brew uninstall --cask firefox",
                       "test ! -e /Applications/Firefox.app"]
    assert assess(removal[1]).risk == "dangerous"
    upgrade = commands("upgrade node", apps.DEBIAN)
    assert upgrade[0] == "dpkg-query -W nodejs" and upgrade[-1] == "node --version"
    assert commands("update everything", apps.WINDOWS)[-1].startswith("winget upgrade --all")


def test_several_apps_in_one_request_share_the_manager_check():
    steps = commands("install chrome and firefox", apps.DEBIAN)
    assert steps.count("command -v apt-get") == 1 and sum("apt-get install" in s for s in steps) == 2


@pytest.mark.parametrize("request_text, expected", [
    ("show versions of node and python", ["node --version || echo 'node is not installed'",
                                          "python3 --version || echo 'python3 is not installed'"]),
    ("git status", ["git status"]),
    ("git pull", ["git status --short --branch", "git pull --ff-only", "git log -1 --oneline"]),
    ("git clone https://github.com/pallets/flask.git", ["git --version",
                                                        "git clone https://github.com/pallets/flask.git",
                                                        "git -C flask log -1 --oneline"]),
    ("create a python venv", ["python3 --version", "python3 -m venv .venv", ".venv/bin/python --version"]),
    ("create a node project named web", ["node --version && npm --version", "mkdir -p web",
                                         "cd web && npm init -y", "cat web/package.json"]),
    ("disk usage", ["df -h"]),
    ("free memory", ["free -h"]),
    ("list processes", ["ps aux --sort=-%cpu | head -n 20"]),
    ("list listening ports", ["ss -tlnp"]),
    ("run `ls -la`", ["ls -la"]),
])
def test_intents_on_linux(request_text, expected):
    assert commands(request_text, apps.DEBIAN) == expected
    assert not any(assess(c).blocked for c in expected)


def test_intents_follow_the_os():
    assert commands("free memory", apps.MACOS) == ["vm_stat", "sysctl -n hw.memsize"]
    assert commands("list listening ports", apps.MACOS) == ["lsof -nP -iTCP -sTCP:LISTEN"]
    assert commands("list processes", apps.WINDOWS) == ["tasklist"]


def test_unknown_requests_get_suggestions_not_a_guess():
    with pytest.raises(planner_rules.Unsupported) as caught:
        planner_rules.plan("make me a sandwich", apps.DEBIAN)
    assert len(caught.value.suggestions) == 5 and "install chrome" in " ".join(planner_rules.EXAMPLES)
    with pytest.raises(planner_rules.Unsupported, match="not available from dnf"):
        planner_rules.plan("install vscode", apps.FEDORA)
    with pytest.raises(planner_rules.Unsupported, match="not a git URL"):
        planner_rules.plan("git clone file:///etc", apps.DEBIAN)


def test_a_clone_url_is_quoted_not_interpreted():
    with pytest.raises(planner_rules.Unsupported):
        planner_rules.plan("git clone https://example.com/x.git;rm", apps.DEBIAN)


@pytest.mark.parametrize("hint, family", [("MacIntel", apps.MACOS), ("Darwin", apps.MACOS), ("Win32", apps.WINDOWS),
                                          ("Windows 11", apps.WINDOWS), ("Ubuntu 24.04", apps.DEBIAN),
                                          ("Fedora Linux 40", apps.FEDORA), ("debian", apps.DEBIAN)])
def test_os_family_from_the_clients_hint(hint, family):
    assert apps.family(hint) == family


def test_a_bare_linux_hint_means_the_servers_family(tmp_path):
    release = tmp_path / "os-release"
    release.write_text('ID=rocky\nID_LIKE="rhel centos fedora"\n')
    assert apps.server_family(release) == apps.FEDORA
    release.write_text("ID=ubuntu\nID_LIKE=debian\n")
    assert apps.server_family(release) == apps.DEBIAN


def test_current_dir_stays_inside_the_workspace(tmp_path):
    workspace = tmp_path / "ws" / "usr_1"
    assert relative_cwd(None, workspace) == "."
    assert relative_cwd("~", workspace) == "."
    assert relative_cwd("~/projects/app", workspace) == "projects/app"
    assert relative_cwd(f"{workspace}/src", workspace) == "src"
    for escape in ("..", "../other", "/etc", "src/../../x", f"{workspace}-evil"):
        with pytest.raises(Exception) as caught:
            relative_cwd(escape, workspace)
        assert caught.value.code == "VALIDATION_ERROR"
