"""Run CPU-bound work off the gevent loop.

Under gevent workers, argon2, embedding or FAISS search would block every
greenlet of the worker; gevent's native thread pool runs them in real OS
threads (these libraries release the GIL) while the loop keeps serving.
Outside gevent (sync workers, CLI, tests) the call simply runs inline.
"""
from __future__ import annotations

from typing import Any, TypeVar
from collections.abc import Callable

T = TypeVar("T")


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("threading"))


def run_blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if _gevent_patched():
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args, kwargs)
    return fn(*args, **kwargs)
