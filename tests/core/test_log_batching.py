"""Access lines are written in batches, yet arrive promptly, in order and before the process ends."""
from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
import textwrap

from app import logs


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _handler(stream: io.StringIO, flush_seconds: float) -> logs.LineHandler:
    handler = logs.LineHandler(stream, flush_seconds)
    handler.setFormatter(logs.JsonLineFormatter())
    return handler


def _access(handler: logs.LineHandler, n: int) -> None:
    handler.write_line(json.dumps({"logger": "lunaos.access", "n": n}) + "\n")


def test_lines_wait_for_the_batch_then_arrive_without_more_traffic() -> None:
    stream = io.StringIO()
    handler = _handler(stream, 0.05)
    for n in range(3):
        _access(handler, n)
    assert stream.getvalue() == ""  # held back: no write per request
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [line["n"] for line in _lines(stream)] == [0, 1, 2]  # the flusher wrote them out


def test_a_full_batch_is_written_at_once() -> None:
    stream = io.StringIO()
    handler = _handler(stream, 60)
    for n in range(logs.LineHandler.MAX_PENDING):
        _access(handler, n)
    assert len(_lines(stream)) == logs.LineHandler.MAX_PENDING


def test_other_records_come_after_the_lines_before_them() -> None:
    stream = io.StringIO()
    handler = _handler(stream, 60)
    logger = logging.getLogger("tests.batching")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        _access(handler, 1)
        logger.warning("after the first request")
        _access(handler, 2)
        handler.flush()
    finally:
        logger.removeHandler(handler)
    assert [line.get("n", line.get("message")) for line in _lines(stream)] == [1, "after the first request", 2]


def test_zero_writes_each_line_at_once() -> None:
    stream = io.StringIO()
    _access(_handler(stream, 0), 7)
    assert _lines(stream) == [{"logger": "lunaos.access", "n": 7}]


def test_lines_still_waiting_are_written_when_the_process_exits(tmp_path) -> None:
    script = textwrap.dedent("""
        import json, sys
        from app import logs
        handler = logs.configure("INFO", True, sys.stdout, flush_seconds=3600)
        logs.write_redacted(logs.logging.getLogger("lunaos.access"), "request", {"status": 200})
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (line,) = [json.loads(text) for text in out.stdout.splitlines()]
    assert line["logger"] == "lunaos.access" and line["status"] == 200
