"""A pids cgroup per step, when the host lets us make one: a hard cap on processes (fork bombs,
even as root, where RLIMIT_NPROC does not apply) and a complete kill (processes that left the
process group with setsid() are still in the cgroup).

`EXECUTOR_PIDS_CGROUP`: "auto" finds a writable cgroup v1 `pids` hierarchy (/sys/fs/cgroup/pids)
or a cgroup v2 root with the pids controller; a path names the directory to create step groups
under; "" or "off" disables it (the rlimits and the process group remain).
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger("lunaos.executor")
PARENT = "lunaos-executor"
_probe_lock = threading.Lock()
_probed: dict[str, Path | None] = {}


def base_directory(setting: str) -> Path | None:
    """The directory step cgroups are created in, or None when none can be used (probed once per setting)."""
    setting = (setting or "").strip()
    if setting.lower() in ("", "off", "none", "false"):
        return None
    with _probe_lock:
        if setting not in _probed:
            _probed[setting] = _probe(setting)
        return _probed[setting]


def _probe(setting: str) -> Path | None:
    candidates = [Path(setting)] if setting.lower() != "auto" else [Path("/sys/fs/cgroup/pids"),
                                                                    Path("/sys/fs/cgroup")]
    for root in candidates:
        try:
            if not (root / "cgroup.procs").exists():
                continue
            v2 = (root / "cgroup.controllers").exists()
            if v2 and "pids" not in (root / "cgroup.controllers").read_text().split():
                continue
            parent = root / PARENT
            parent.mkdir(exist_ok=True)
            if v2:
                (root / "cgroup.subtree_control").write_text("+pids")
                (parent / "cgroup.subtree_control").write_text("+pids")
            for stale in parent.glob("step-*"):  # left by processes that ended; busy ones refuse rmdir
                try:
                    stale.rmdir()
                except OSError:
                    pass
            probe = StepGroup.create(parent, 8)
            if probe is None:
                continue
            probe.remove()
            return parent
        except OSError as error:
            log.info("pids cgroup at %s not usable: %s", root, error)
    return None


_POOL_SIZE = 8
_pool_lock = threading.Lock()
_pool: dict[Path, list[StepGroup]] = {}


def acquire(parent: Path, max_processes: int) -> StepGroup | None:
    """An empty step cgroup: a pooled one (creating and removing a cgroup costs milliseconds), else a new one."""
    while True:
        with _pool_lock:
            idle = _pool.get(parent) or []
            group = idle.pop() if idle else None
        if group is None:
            return StepGroup.create(parent, max_processes)
        try:
            (group.path / "pids.max").write_text(str(max(int(max_processes), 1)))
            return group
        except OSError:  # removed meanwhile (another process's clean-up): take the next
            continue


def release(group: StepGroup) -> None:
    """Kill whatever is left in it; an empty group goes back to the pool."""
    group.kill()
    if group.pids():
        group.remove()
        return
    with _pool_lock:
        idle = _pool.setdefault(group.path.parent, [])
        if len(idle) < _POOL_SIZE:
            idle.append(group)
            return
    group.remove()


@atexit.register
def _drain_pool() -> None:
    """Pooled groups are empty; remove them when the process ends (a killed process leaves them to the
    next start-up's probe, which removes empty ones)."""
    with _pool_lock:
        idle = [group for groups in _pool.values() for group in groups]
        _pool.clear()
    for group in idle:
        try:
            group.path.rmdir()
        except OSError:
            pass


class StepGroup:
    """One step's cgroup: joined by the step's first process before it runs anything, killed as a whole."""

    def __init__(self, path: Path):
        self.path = path
        self.procs = str(path / "cgroup.procs")

    @classmethod
    def create(cls, parent: Path, max_processes: int) -> StepGroup | None:
        path = parent / f"step-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max(int(max_processes), 1)))
        except OSError as error:
            log.warning("could not create the step cgroup %s: %s", path, error)
            try:
                path.rmdir()
            except OSError:
                pass
            return None
        return cls(path)

    def join(self) -> None:
        """Runs in the forked child: only os-level calls (no locks, no buffered files)."""
        fd = os.open(self.procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in Path(self.procs).read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        kill_file = self.path / "cgroup.kill"  # cgroup v2, kernel 5.14+: atomic
        if kill_file.exists():
            try:
                kill_file.write_text("1")
            except OSError:
                pass
        for attempt in range(300):  # v1: repeat, a process may fork between the read and the kill
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    log.warning("cannot kill pid %s of %s", pid, self.path)
            # Dying processes leave the group within a millisecond or two; poll finely at first.
            time.sleep(0.001 if attempt < 50 else 0.01)

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                self.kill()
                time.sleep(0.02)
        log.warning("could not remove the step cgroup %s", self.path)
