"""The executor's configuration: defaults, start-up checks, and the sandbox a caller's steps run in."""
from __future__ import annotations

import logging
import os
import pwd
import threading
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from app.config import ConfigError
from app.errors import ApiError

from . import cgroups, sandbox

log = logging.getLogger("lunaos.executor")
SANDBOX_MODES = ("auto", "bwrap", "process")
PLANNERS = ("auto", "rules", "llm")

DEFAULTS: dict[str, Any] = {
    "EXECUTOR_ENABLED": False,  # off: every executor route answers 403 FEATURE_DISABLED
    "EXECUTOR_ADMIN_ONLY": True,  # executor:run is carried by admins' sessions only
    "EXECUTOR_WORKSPACE": "",  # "": <instance>/executor; each user works in <workspace>/<user id>
    "EXECUTOR_SANDBOX": "auto",  # auto | bwrap | process (see sandbox.py for what each guarantees)
    "EXECUTOR_NETWORK": True,  # false: steps run without network (bubblewrap only)
    "EXECUTOR_STEP_TIMEOUT": 300,  # seconds per step; the process group is killed after it
    "EXECUTOR_MAX_OUTPUT_BYTES": 1024 * 1024,  # kept per stream and step, then a truncation marker
    "EXECUTOR_MAX_STEPS": 20,
    "EXECUTOR_MAX_PROCESSES": 256,  # RLIMIT_NPROC and, where available, the step's pids cgroup
    "EXECUTOR_MAX_MEMORY_BYTES": 4 * 1024 ** 3,  # RLIMIT_AS; 0: no limit
    "EXECUTOR_MAX_FILE_BYTES": 1024 ** 3,  # RLIMIT_FSIZE
    "EXECUTOR_CPU_SECONDS": 0,  # RLIMIT_CPU; 0: the step timeout
    "EXECUTOR_MAX_OPEN_FILES": 1024,
    "EXECUTOR_PIDS_CGROUP": "auto",  # auto | a cgroup directory | off
    "EXECUTOR_ENV_ALLOW": ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM"],
    "EXECUTOR_ENV_SET": {"DEBIAN_FRONTEND": "noninteractive", "HOMEBREW_NO_AUTO_UPDATE": "1", "CI": "1"},
    "EXECUTOR_HIDE_PATHS": ["~/.ssh", "~/.aws", "~/.config/gcloud", "~/.kube", "~/.docker", "~/.netrc",
                            "/run/docker.sock", "/var/run/docker.sock"],
    "EXECUTOR_WRITABLE_PATHS": [],  # extra read-write paths inside the bubblewrap sandbox
    "EXECUTOR_RUN_AS": "",  # a user (name or uid[:gid]) steps run as, when the server runs as root
    "EXECUTOR_SHELL": "",  # "": /bin/bash when present, else /bin/sh
    "EXECUTOR_PLANNER": "auto",  # auto (a model when one is configured) | rules | llm
    "EXECUTOR_LLM_MODEL": "",
    "EXECUTOR_LLM_MAX_TOKENS": 512,
    "EXECUTOR_SYNC_WAIT_SECONDS": 300.0,  # a `stream: false` run is waited for this long, then answered 202
    "EXECUTOR_OUTPUT_FLUSH_SECONDS": 0.1,  # output lines within this window become one stored event
}
_NUMBERS = ("EXECUTOR_STEP_TIMEOUT", "EXECUTOR_MAX_OUTPUT_BYTES", "EXECUTOR_MAX_STEPS", "EXECUTOR_MAX_PROCESSES",
            "EXECUTOR_MAX_FILE_BYTES", "EXECUTOR_MAX_OPEN_FILES", "EXECUTOR_LLM_MAX_TOKENS",
            "EXECUTOR_SYNC_WAIT_SECONDS", "EXECUTOR_OUTPUT_FLUSH_SECONDS")


class SandboxUnavailable(ApiError):
    status, code = 503, "SANDBOX_UNAVAILABLE"
    message = "EXECUTOR_SANDBOX=bwrap, but bubblewrap (bwrap) is not installed or does not work on this host."


def check(app: Flask) -> None:
    """Refuse a configuration that cannot work, at start-up, naming the variable."""
    config = app.config
    for key in _NUMBERS:
        try:
            ok = float(config[key]) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"LUNAOS_{key}: expected a number greater than 0, got {config[key]!r}")
    for key in ("EXECUTOR_MAX_MEMORY_BYTES", "EXECUTOR_CPU_SECONDS"):
        if not isinstance(config[key], int | float) or config[key] < 0:
            raise ConfigError(f"LUNAOS_{key}: expected 0 (no limit) or a positive number, got {config[key]!r}")
    if config["EXECUTOR_SANDBOX"] not in SANDBOX_MODES:
        raise ConfigError(f"LUNAOS_EXECUTOR_SANDBOX: expected one of {', '.join(SANDBOX_MODES)}, "
                          f"got {config['EXECUTOR_SANDBOX']!r}")
    if config["EXECUTOR_PLANNER"] not in PLANNERS:
        raise ConfigError(f"LUNAOS_EXECUTOR_PLANNER: expected one of {', '.join(PLANNERS)}, "
                          f"got {config['EXECUTOR_PLANNER']!r}")
    for key in ("EXECUTOR_ENV_ALLOW", "EXECUTOR_HIDE_PATHS", "EXECUTOR_WRITABLE_PATHS"):
        if not isinstance(config[key], list | tuple) or not all(isinstance(v, str) for v in config[key]):
            raise ConfigError(f"LUNAOS_{key}: expected a list of strings")
    if not isinstance(config["EXECUTOR_ENV_SET"], dict):
        raise ConfigError("LUNAOS_EXECUTOR_ENV_SET: expected an object of names to values")
    if config["EXECUTOR_RUN_AS"]:
        run_as(config["EXECUTOR_RUN_AS"])
    if config["EXECUTOR_ENABLED"] and config["EXECUTOR_SANDBOX"] == "process":
        log.warning("the executor runs steps without bubblewrap (EXECUTOR_SANDBOX=process): a step can read and "
                    "write everything the server's user can")


def run_as(value: str) -> tuple[int, int]:
    user, _, group = str(value).partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise ConfigError(f"LUNAOS_EXECUTOR_RUN_AS: no such user {user!r}") from None
    return entry.pw_uid, int(group) if group.isdigit() else entry.pw_gid


def workspaces_root(app: Flask | None = None) -> Path:
    app = app or current_app
    configured = app.config["EXECUTOR_WORKSPACE"]
    return Path(configured).expanduser().resolve() if configured else Path(app.instance_path).resolve() / "executor"


def workspace(owner_id: str, app: Flask | None = None) -> Path:
    """The caller's own directory (created on first use, private to the server's user)."""
    app = app or current_app
    path = workspaces_root(app) / owner_id
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if app.config["EXECUTOR_RUN_AS"] and hasattr(os, "geteuid") and os.geteuid() == 0:
        uid, gid = run_as(app.config["EXECUTOR_RUN_AS"])
        os.chown(path, uid, gid)
    return path


_bwrap_lock = threading.Lock()
_bwrap_ok: dict[str, bool] = {}


def sandbox_mode(app: Flask | None = None) -> str:
    """"bwrap" or "process"; raises SandboxUnavailable when bwrap is required and missing."""
    app = app or current_app
    wanted = app.config["EXECUTOR_SANDBOX"]
    if wanted == "process":
        return "process"
    path = sandbox.bwrap_path()
    works = False
    if path is not None:
        with _bwrap_lock:
            if path not in _bwrap_ok:
                _bwrap_ok[path] = sandbox.bwrap_works(path)
            works = _bwrap_ok[path]
    if works:
        return "bwrap"
    if wanted == "bwrap":
        raise SandboxUnavailable()
    return "process"


def shell(app: Flask) -> str:
    configured = app.config["EXECUTOR_SHELL"]
    if configured:
        return configured
    return "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


def environment(app: Flask, home: Path, mode: str) -> dict[str, str]:
    """The step's whole environment: allow-listed names from the server's, then fixed values."""
    env = {name: os.environ[name] for name in app.config["EXECUTOR_ENV_ALLOW"] if name in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update({str(k): str(v) for k, v in app.config["EXECUTOR_ENV_SET"].items()})
    env["HOME"] = str(home)
    env["TMPDIR"] = "/tmp" if mode == "bwrap" else str(home)
    return env


def limits(app: Flask) -> sandbox.Limits:
    config = app.config
    timeout = float(config["EXECUTOR_STEP_TIMEOUT"])
    return sandbox.Limits(timeout=timeout, max_output=int(config["EXECUTOR_MAX_OUTPUT_BYTES"]),
                          max_processes=int(config["EXECUTOR_MAX_PROCESSES"]),
                          max_memory=int(config["EXECUTOR_MAX_MEMORY_BYTES"]),
                          max_file_size=int(config["EXECUTOR_MAX_FILE_BYTES"]),
                          cpu_seconds=int(config["EXECUTOR_CPU_SECONDS"]) or int(timeout + 1),
                          max_open_files=int(config["EXECUTOR_MAX_OPEN_FILES"]))


def sandbox_for(owner_id: str, app: Flask | None = None) -> sandbox.Sandbox:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    mode = sandbox_mode(app)
    home = workspace(owner_id, app)
    hide = [os.path.expanduser(p) for p in app.config["EXECUTOR_HIDE_PATHS"]]
    hide.insert(0, str(Path(app.instance_path).resolve()))  # the database, secrets.json, indexes
    root_user = hasattr(os, "geteuid") and os.geteuid() == 0
    return sandbox.Sandbox(
        workspace=home, workspaces_root=workspaces_root(app), mode=mode, shell=shell(app),
        network=bool(app.config["EXECUTOR_NETWORK"]), env=environment(app, home, mode), hide=tuple(hide),
        writable=tuple(os.path.expanduser(p) for p in app.config["EXECUTOR_WRITABLE_PATHS"]), limits=limits(app),
        run_as=run_as(app.config["EXECUTOR_RUN_AS"]) if app.config["EXECUTOR_RUN_AS"] and root_user else None,
        cgroup_parent=cgroups.base_directory(app.config["EXECUTOR_PIDS_CGROUP"]))


def describe(app: Flask) -> dict[str, Any]:
    """For /health: whether it is on, and what isolation steps get."""
    if not app.config["EXECUTOR_ENABLED"]:
        return {"status": "not configured", "detail": "disabled (EXECUTOR_ENABLED=false)"}
    try:
        mode = sandbox_mode(app)
    except SandboxUnavailable as error:
        return {"status": "degraded", "detail": error.message, "required": False}
    cgroup = cgroups.base_directory(app.config["EXECUTOR_PIDS_CGROUP"])
    return {"status": "ok", "sandbox": mode, "pids_cgroup": bool(cgroup),
            "detail": f"steps run in {'bubblewrap' if mode == 'bwrap' else 'a process group without bubblewrap'}"}
