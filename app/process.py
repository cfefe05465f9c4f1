"""This process's id, without a system call on every check.

Caches and connection pools compare a saved pid with the current one to notice that
they were inherited through a fork (gunicorn forks its workers from a loaded app).
`os.getpid()` is a system call each time, and some of those checks run on every
request; the id here is read once and refreshed in the child of every `os.fork()`.
"""
from __future__ import annotations

import os

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    return _pid
