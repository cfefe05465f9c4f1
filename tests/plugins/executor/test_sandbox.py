"""The sandbox itself: process group, timeouts, output caps, environment, limits, bubblewrap isolation."""
from __future__ import annotations

import dataclasses
import os
import time
import uuid
from pathlib import Path

import pytest

from plugins.executor import cgroups, sandbox

BWRAP = sandbox.bwrap_path()
needs_bwrap = pytest.mark.skipif(not (BWRAP and sandbox.bwrap_works(BWRAP)), reason="bubblewrap is not usable here")


def box(tmp_path: Path, mode: str = "bwrap", **limits) -> sandbox.Sandbox:
    root = tmp_path / "workspaces"
    home = root / "usr_me"
    home.mkdir(parents=True, exist_ok=True)
    (root / "usr_other").mkdir(exist_ok=True)
    (root / "usr_other" / "diary.txt").write_text("private")
    hidden = tmp_path / "instance"
    hidden.mkdir(exist_ok=True)
    (hidden / "secrets.json").write_text('{"SECRET_KEY": "s3cret"}')
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return sandbox.Sandbox(workspace=home, workspaces_root=root, mode=mode, shell="/bin/bash", env=env,
                           hide=(str(hidden),), limits=sandbox.Limits(**{"timeout": 20, **limits}),
                           cgroup_parent=cgroups.base_directory("auto"))


MODES = [pytest.param("process", id="process"), pytest.param("bwrap", id="bwrap", marks=needs_bwrap)]


@pytest.mark.parametrize("mode", MODES)
def test_output_exit_code_and_lines(tmp_path, mode):
    sandbox_ = box(tmp_path, mode)
    lines = []
    outcome = sandbox.run("echo one; echo two >&2; printf three; exit 3", sandbox_.workspace, sandbox_,
                          on_output=lambda stream, line: lines.append((stream, line)))
    assert outcome.exit_code == 3 and not outcome.ok
    assert outcome.stdout == "one\nthree" and outcome.stderr == "two\n"
    assert sorted(lines) == [("stderr", "two"), ("stdout", "one"), ("stdout", "three")]


@pytest.mark.parametrize("mode", MODES)
def test_output_is_capped_with_a_marker(tmp_path, mode):
    sandbox_ = box(tmp_path, mode, max_output=1000)
    outcome = sandbox.run("seq 1 100000", sandbox_.workspace, sandbox_)
    assert outcome.ok and outcome.stdout_truncated
    kept, marker = outcome.stdout[:1000], outcome.stdout[1000:]
    assert kept.startswith("1\n2\n3\n") and "[output truncated: " in marker and "more bytes not shown]" in marker


@pytest.mark.parametrize("mode", MODES)
def test_timeout_kills_the_whole_process_group(tmp_path, mode):
    sandbox_ = box(tmp_path, mode, timeout=1)
    marker = sandbox_.workspace / "late"
    outcome = sandbox.run(f"(sleep 3; touch {marker}) & sleep 30", sandbox_.workspace, sandbox_)
    assert outcome.timed_out and not outcome.ok
    time.sleep(3.5)  # the background child would have written by now had it survived
    assert not marker.exists()


@pytest.mark.parametrize("mode", MODES)
def test_background_children_do_not_outlive_their_step(tmp_path, mode):
    sandbox_ = box(tmp_path, mode)
    marker = sandbox_.workspace / "late"
    outcome = sandbox.run(f"(sleep 2; touch {marker}) > /dev/null 2>&1 & echo started", sandbox_.workspace,
                          sandbox_)
    assert outcome.ok and outcome.stdout == "started\n"
    time.sleep(2.5)
    assert not marker.exists()


@pytest.mark.parametrize("mode", MODES)
def test_cancellation_stops_the_step(tmp_path, mode):
    sandbox_ = box(tmp_path, mode)
    asked = time.monotonic() + 0.5
    outcome = sandbox.run("sleep 30", sandbox_.workspace, sandbox_, should_stop=lambda: time.monotonic() > asked)
    assert outcome.cancelled and not outcome.timed_out and not outcome.ok


@pytest.mark.parametrize("mode", MODES)
def test_environment_is_the_allow_list_and_stdin_is_empty(tmp_path, mode, monkeypatch):
    monkeypatch.setenv("LUNAOS_SECRET_KEY", "must-not-leak")
    sandbox_ = box(tmp_path, mode)
    outcome = sandbox.run("env; cat; echo cat-done", sandbox_.workspace, sandbox_)
    names = {line.split("=", 1)[0] for line in outcome.stdout.splitlines() if "=" in line}
    assert "LUNAOS_SECRET_KEY" not in names and "must-not-leak" not in outcome.stdout
    assert {"PATH", "HOME", "LANG"} <= names
    assert outcome.stdout.endswith("cat-done\n")  # `cat` read an empty stdin instead of waiting


@pytest.mark.parametrize("mode", MODES)
def test_file_size_limit(tmp_path, mode):
    sandbox_ = box(tmp_path, mode, max_file_size=64 * 1024)
    outcome = sandbox.run("head -c 1000000 /dev/zero > big.bin", sandbox_.workspace, sandbox_)
    assert not outcome.ok
    assert (sandbox_.workspace / "big.bin").stat().st_size <= 64 * 1024


@pytest.fixture
def private_cgroup():
    """A pids cgroup parent of this test's own (step groups are pooled per parent)."""
    base = cgroups.base_directory("auto")
    if base is None:
        yield None
        return
    parent = base / f"test-{uuid.uuid4().hex[:8]}"
    parent.mkdir()
    if (base.parent / "cgroup.controllers").exists():  # cgroup v2: children need the controller enabled
        (parent / "cgroup.subtree_control").write_text("+pids")
    yield parent
    for group in parent.glob("step-*"):
        cgroups.StepGroup(group).remove()
    parent.rmdir()


@pytest.mark.skipif(cgroups.base_directory("auto") is None and os.geteuid() == 0,
                    reason="as root only a pids cgroup caps processes, and none is available here")
@pytest.mark.parametrize("mode", MODES)
def test_a_fork_bomb_is_capped_and_cleaned_up(tmp_path, mode, private_cgroup):
    sandbox_ = dataclasses.replace(box(tmp_path, mode, max_processes=32, timeout=5), cgroup_parent=private_cgroup)
    outcome = sandbox.run("bomb() { bomb | bomb & }; bomb; sleep 1", sandbox_.workspace, sandbox_)
    assert outcome.exit_code is not None or outcome.timed_out
    if private_cgroup is not None:
        groups = [cgroups.StepGroup(g) for g in private_cgroup.glob("step-*")]
        assert groups and all(g.pids() == [] for g in groups)  # every process of the step is gone
        assert int((groups[0].path / "pids.max").read_text()) == 32


@needs_bwrap
def test_bubblewrap_root_is_read_only_and_only_the_workspace_is_writable(tmp_path):
    sandbox_ = box(tmp_path)
    outcome = sandbox.run("touch /usr/lunaos-probe; echo $?; touch /etc/lunaos-probe; echo $?; touch mine && echo ok",
                          sandbox_.workspace, sandbox_)
    assert outcome.stdout.splitlines() == ["1", "1", "ok"]
    assert "Read-only file system" in outcome.stderr
    assert (sandbox_.workspace / "mine").exists() and not Path("/usr/lunaos-probe").exists()


@needs_bwrap
def test_bubblewrap_hides_secrets_other_workspaces_and_disks(tmp_path):
    sandbox_ = box(tmp_path)
    instance = tmp_path / "instance"
    other = tmp_path / "workspaces" / "usr_other"
    outcome = sandbox.run(f"cat {instance}/secrets.json; ls {other}; ls /dev", sandbox_.workspace, sandbox_)
    assert "s3cret" not in outcome.stdout and "diary" not in outcome.stdout
    devices = outcome.stdout.split()
    assert "null" in devices and not any(d.startswith(("sd", "nvme", "vd", "xvd")) for d in devices)


@needs_bwrap
def test_bubblewrap_steps_cannot_see_the_servers_processes_or_regain_privileges(tmp_path):
    sandbox_ = box(tmp_path)
    outcome = sandbox.run("ls /proc | grep -c '^[0-9]'; grep CapEff /proc/self/status; "
                          "mount -o remount,rw,bind / 2>/dev/null && echo remounted", sandbox_.workspace, sandbox_)
    count, capabilities = outcome.stdout.splitlines()[:2]
    assert int(count) < 10  # its own PID namespace: a handful of processes, not the host's
    assert capabilities.split()[1] == "0000000000000000"
    assert "remounted" not in outcome.stdout


@needs_bwrap
def test_bubblewrap_without_network(tmp_path):
    sandbox_ = box(tmp_path)
    offline = sandbox.Sandbox(**{**sandbox_.__dict__, "network": False})
    interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1"
    online = sandbox.run(interfaces, sandbox_.workspace, sandbox_)
    outcome = sandbox.run(interfaces, offline.workspace, offline)
    assert outcome.stdout.split() == ["lo"]  # a network namespace of its own: loopback only
    assert len(online.stdout.split()) >= 1
