"""The cached process id follows forks: fork-inherited caches and pools must notice them."""
import os

from app.process import pid


def test_pid_is_this_process() -> None:
    assert pid() == os.getpid()


def test_a_forked_child_sees_its_own_pid() -> None:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, f"{pid()} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    seen = os.read(read, 100).decode().split()
    os.close(read)
    os.waitpid(child, 0)
    assert seen[0] == seen[1] == str(child)
    assert pid() == os.getpid() != child
