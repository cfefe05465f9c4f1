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
import shutil
import subprocess
import sys
import tempfile
from fnmatch import fnmatch
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "sample_plugin"
CACHE = Path(__file__).resolve().parent.parent.parent / ".pytest_cache" / "sample_plugin"
# Build by-products that must neither change the fingerprint nor be copied into the build.
_IGNORED = ("__pycache__", "build", "*.egg-info", "*.pyc")


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        relative = path.relative_to(SOURCE)
        if path.is_file() and not any(fnmatch(part, pattern) for part in relative.parts for pattern in _IGNORED):
            digest.update(str(relative).encode())
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
            # Build from a copy: pip builds in-tree, and setuptools would leave build/ and
            # *.egg-info in tests/fixtures (changing the fingerprint for the next process).
            with tempfile.TemporaryDirectory(prefix="lunaos-sample-") as scratch:
                copy = Path(scratch) / "sample_plugin"
                shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns(*_IGNORED))
                shutil.rmtree(target, ignore_errors=True)  # a half-finished earlier attempt
                subprocess.run(
                    [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                     "--target", str(target), str(copy)],
                    check=True,
                )
            (target / ".installed").touch()
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(target)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), *inherited])
    return target
