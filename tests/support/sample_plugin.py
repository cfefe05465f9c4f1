"""Install the third-party sample plugin for real: `pip install` of its own distribution.

It goes into a private directory (not the project's venv, so `make run` never
serves it), which is put on `sys.path` and on PYTHONPATH for the servers and
CLI processes that tests start. Entry points are then discovered exactly as
for any installed distribution.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "sample_plugin"
CACHE = Path(__file__).resolve().parent.parent.parent / ".pytest_cache" / "sample_plugin"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(SOURCE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_installed() -> Path | None:
    if not (SOURCE / "pyproject.toml").exists():
        return None
    target = CACHE / _fingerprint()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # xdist workers start together
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".installed").exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                 "--target", str(target), str(SOURCE)],
                check=True,
            )
            (target / ".installed").touch()
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
    return target
