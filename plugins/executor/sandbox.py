"""Running one step: its own process group, killed as a group on timeout, cancellation or exit;
capped output; an allow-listed environment; the working directory confined to the workspace;
resource limits; no stdin. With bubblewrap: a read-only root, only the workspace writable.

Guarantees with bubblewrap (`EXECUTOR_SANDBOX=bwrap`, or `auto` when `bwrap` works here):
the filesystem is read-only except the caller's workspace directory (and any
EXECUTOR_WRITABLE_PATHS); other users' workspaces, the server's instance directory (database,
secrets) and EXECUTOR_HIDE_PATHS are hidden; /tmp is private; /dev holds only pseudo-devices (no
disks); the step gets its own PID, IPC and UTS namespaces (it cannot see or signal the server's
processes) and no capabilities, even when the server runs as root; optionally no network.

Without bubblewrap (`process`), isolation is process-level only: the environment is scrubbed, the
step starts in the workspace, limits apply and the whole process group is killed, but the step can
read and write anything the server's user can, including the database and instance/secrets.json.

Limits (RLIMIT_NPROC, _FSIZE, _CPU, _NOFILE, _AS, _CORE) are set by util-linux `prlimit` in the exec
chain, so spawning a step never forks the (large) server process; where a pids cgroup is available
(see cgroups.py) it caps processes even for root and lets the kill reach processes that escaped the
process group with setsid().
"""
from __future__ import annotations

import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroups
from .cgroups import StepGroup

log = logging.getLogger("lunaos.executor")
CHUNK = 65536
KILL_GRACE_SECONDS = 1.0
DRAIN_SECONDS = 0.5  # after the shell exits, how long background children may keep the pipes open
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Limits:
    timeout: float = 300.0
    max_output: int = 1024 * 1024  # bytes kept per stream
    max_processes: int = 256
    max_memory: int = 4 * 1024 ** 3  # address space, bytes; 0: no limit
    max_file_size: int = 1024 ** 3
    cpu_seconds: int = 300
    max_open_files: int = 1024


@dataclass(frozen=True)
class Sandbox:
    workspace: Path  # writable: the caller's own directory
    workspaces_root: Path  # every caller's directories live here (hidden from one another)
    mode: str = "process"  # "bwrap" | "process"
    shell: str = "/bin/sh"
    network: bool = True
    env: dict[str, str] = field(default_factory=dict)
    hide: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    limits: Limits = Limits()
    run_as: tuple[int, int] | None = None  # (uid, gid) to drop to, when the server runs as root
    cgroup_parent: Path | None = None


@dataclass
class Outcome:
    exit_code: int | None
    stdout: str
    stderr: str
    duration_ms: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


OnOutput = Callable[[str, str], None]  # (stream, complete line without its newline)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_works(bwrap: str) -> bool:
    """bubblewrap may be installed but unusable (no user namespaces in a container)."""
    try:
        done = subprocess.run([bwrap, *_bwrap_base(network=True), "--", "/bin/true"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    if done.returncode != 0:
        log.warning("bubblewrap is installed but does not work here: %s", done.stderr.decode(errors="replace")[:300])
    return done.returncode == 0


def _bwrap_base(network: bool, unprivileged: bool | None = None) -> list[str]:
    args = ["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp"]
    if unprivileged is None:
        unprivileged = hasattr(os, "geteuid") and os.geteuid() != 0
    if unprivileged:
        args.insert(0, "--unshare-user")  # unprivileged bubblewrap needs a user namespace
    if not network:
        args.insert(0, "--unshare-net")
    return args


def _bwrap(box: Sandbox, cwd: Path) -> list[str]:
    unprivileged = box.run_as is not None or (hasattr(os, "geteuid") and os.geteuid() != 0)
    args = [bwrap_path() or "bwrap", *_bwrap_base(box.network, unprivileged)]
    for path in (*box.hide, str(box.workspaces_root)):
        if os.path.isdir(path):
            args += ["--tmpfs", path]
        elif os.path.exists(path):
            args += ["--ro-bind", "/dev/null", path]
    for path in (str(box.workspace), *box.writable):
        if os.path.exists(path):
            args += ["--bind", path, path]
    return [*args, "--chdir", str(cwd), "--"]


def _rlimits(limits: Limits) -> list[tuple[str, int, int]]:
    """(prlimit option, resource, value), each value clamped to the current hard limit."""
    wanted = [("nproc", resource.RLIMIT_NPROC, limits.max_processes),
              ("fsize", resource.RLIMIT_FSIZE, limits.max_file_size),
              ("cpu", resource.RLIMIT_CPU, limits.cpu_seconds),
              ("nofile", resource.RLIMIT_NOFILE, limits.max_open_files),
              ("as", resource.RLIMIT_AS, limits.max_memory), ("core", resource.RLIMIT_CORE, 0)]
    out = []
    for option, which, value in wanted:
        if value <= 0 and option != "core":
            continue
        _, hard = resource.getrlimit(which)
        out.append((option, which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
    return out


def argv(command: str, cwd: Path, box: Sandbox, group: StepGroup | None = None) -> list[str]:
    """The exec chain of a step: [join the step's cgroup] -> [drop to EXECUTOR_RUN_AS] -> prlimit -> [bwrap]
    -> shell -c command. Each link execs the next, so the step costs a few exec()s and no fork of the
    (large) server process beyond the one vfork subprocess does; see `_fallback_preexec` otherwise."""
    chain: list[str] = []
    if group is not None:
        chain += ["/bin/sh", "-c", 'echo $$ > "$0" || exit 125; exec "$@"', group.procs]
    if box.run_as is not None and _SETPRIV:
        chain += [_SETPRIV, f"--reuid={box.run_as[0]}", f"--regid={box.run_as[1]}", "--clear-groups", "--"]
    if _PRLIMIT:
        chain += [_PRLIMIT, *(f"--{option}={value}" for option, _, value in _rlimits(box.limits)), "--"]
    if box.mode == "bwrap":
        chain += _bwrap(box, cwd)
    return [*chain, box.shell, "-c", command]


_PRLIMIT = shutil.which("prlimit")
_SETPRIV = shutil.which("setpriv")


def _fallback_preexec(limits: Limits, group: StepGroup | None) -> Callable[[], None] | None:
    """Without prlimit (macOS, minimal images) the limits are set in the child before exec. That makes
    subprocess fork() the whole server process instead of vfork(): ~20 ms more per step."""
    if _PRLIMIT:
        return None

    def apply() -> None:
        if group is not None:
            group.join()
        for _, which, value in _rlimits(limits):
            resource.setrlimit(which, (value, value))

    return apply


class _Stream:
    def __init__(self, name: str, cap: int, on_output: OnOutput | None):
        self.name = name
        self.cap = cap
        self.kept = bytearray()
        self.dropped = 0
        self.partial = b""
        self.on_output = on_output

    def feed(self, data: bytes) -> None:
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += data[:room]
            self._emit(data[:room])
        self.dropped += max(len(data) - max(room, 0), 0)

    def _emit(self, data: bytes, final: bool = False) -> None:
        if self.on_output is None:
            return
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        if final and self.partial:
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            self.on_output(self.name, _text(line))

    def close(self) -> None:
        self._emit(b"", final=True)
        if self.dropped and self.on_output is not None:
            self.on_output(self.name, f"[output truncated: {self.dropped} more bytes not shown]")

    def text(self) -> str:
        text = _text(bytes(self.kept))
        if self.dropped:
            text += f"\n[output truncated: {self.dropped} more bytes not shown]\n"
        return text


def _text(data: bytes) -> str:
    # PostgreSQL text and JSON cannot hold NUL; binary output is shown replaced, not stored raw.
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def run(command: str, cwd: Path, box: Sandbox, on_output: OnOutput | None = None,
        should_stop: Callable[[], bool] | None = None) -> Outcome:
    """Run `command` with `box.shell -c`, return its outcome; never leaves a process behind."""
    limits = box.limits
    group = cgroups.acquire(box.cgroup_parent, limits.max_processes) if box.cgroup_parent else None
    if group is not None and box.run_as is not None:
        os.chown(group.procs, box.run_as[0], box.run_as[1])
    started = time.monotonic()
    streams = {"stdout": _Stream("stdout", limits.max_output, on_output),
               "stderr": _Stream("stderr", limits.max_output, on_output)}
    extra: dict[str, object] = {}
    if box.run_as is not None and not _SETPRIV:
        extra = {"user": box.run_as[0], "group": box.run_as[1], "extra_groups": []}
    preexec = _fallback_preexec(limits, group)
    chain = argv(command, cwd, box, group if preexec is None else None)
    try:
        process = subprocess.Popen(chain, cwd=str(cwd), env=dict(box.env), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                   close_fds=True, preexec_fn=preexec, **extra)  # type: ignore[arg-type]
    except Exception:
        if group is not None:
            cgroups.release(group)
        raise
    timed_out = cancelled = False
    try:
        timed_out, cancelled = _pump(process, streams, started + limits.timeout, should_stop)
    finally:
        _kill(process, group, gracefully=timed_out or cancelled)
        for stream in streams.values():
            stream.close()
        if group is not None:
            cgroups.release(group)
    return Outcome(exit_code=process.returncode, stdout=streams["stdout"].text(), stderr=streams["stderr"].text(),
                   duration_ms=(time.monotonic() - started) * 1000, stdout_truncated=bool(streams["stdout"].dropped),
                   stderr_truncated=bool(streams["stderr"].dropped), timed_out=timed_out, cancelled=cancelled)


def _pump(process: subprocess.Popen, streams: dict[str, _Stream], deadline: float,
          should_stop: Callable[[], bool] | None) -> tuple[bool, bool]:
    """Read both pipes until they close; (timed_out, cancelled)."""
    selector = selectors.DefaultSelector()
    for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
        os.set_blocking(pipe.fileno(), False)  # type: ignore[union-attr]
        selector.register(pipe, selectors.EVENT_READ, streams[name])  # type: ignore[arg-type]
    exited_at: float | None = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                return True, False
            if should_stop is not None and should_stop():
                return False, True
            if exited_at is None and process.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > DRAIN_SECONDS:
                break  # background children keep the pipes open: they are killed with the group
            for key, _ in selector.select(timeout=min(POLL_SECONDS, max(deadline - now, 0.01))):
                try:
                    data = os.read(key.fileobj.fileno(), CHUNK)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if data:
                    key.data.feed(data)
                else:
                    selector.unregister(key.fileobj)
        while process.poll() is None:  # pipes closed, the shell still running
            now = time.monotonic()
            if now >= deadline:
                return True, False
            if should_stop is not None and should_stop():
                return False, True
            try:
                process.wait(timeout=min(POLL_SECONDS, max(deadline - now, 0.01)))
            except subprocess.TimeoutExpired:
                pass
        return False, False
    finally:
        selector.close()


def _kill(process: subprocess.Popen, group: StepGroup | None, gracefully: bool) -> None:
    """Kill the step's whole process group (and cgroup): on timeout and cancellation, and after a normal
    exit too, so nothing a step started in the background outlives it."""
    if gracefully and process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process.pid, signal.SIGKILL)
    if group is not None:
        group.kill()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.error("step process %s did not exit after SIGKILL", process.pid)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
