"""JSON log lines with secrets redacted wherever they appear.

Redaction runs in a filter on the handler, so every record is covered:
ours, Flask's, SQLAlchemy's and third-party libraries', message text,
`extra` fields, nested dicts and formatted tracebacks alike.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import time
import weakref
from functools import lru_cache
from typing import Any

from .json_encoding import ascii_json
from .process import pid as current_pid

REDACTED = "[REDACTED]"

# Field names whose values are secret, whatever the value looks like.
SECRET_FIELD = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|authorization|cookie|api[-_]?key|private[-_]?key|"
    r"^key$|signature|otp|mfa[-_]?code|credential|pepper)",
    re.IGNORECASE,
)

# Names whose value is secret in free text ("password=...", "'api_key': '...'"), also with a prefix
# joined by "_" or "-" (new_password, access_token, client_secret, X-Api-Key); "tokens_used" is not one.
_SECRET_NAME = (r"(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|key|otp|"
                r"mfa[_-]?code|signature|credentials?|pepper)")

# Values that are secret wherever they appear in free text.
SECRET_VALUE_PATTERNS = [
    # Header values that may use any scheme ("Token x", "Digest ...") or hold several cookies.
    (re.compile(r"(?i)(?<![A-Za-z0-9])((?:proxy-)?authorization|(?:set-)?cookie)([\"']?\s*[=:]\s*[\"']?)[^\"'\r\n]+"),
     r"\1\2" + REDACTED),
    (re.compile(r"\b(lnos_(?:live|test)_)[A-Za-z0-9]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\b((?:sk|pk|rk)_(?:live|test)_)[A-Za-z0-9]+"), r"\1" + REDACTED),
    (re.compile(r"\b(whsec_)[A-Za-z0-9]+"), r"\1" + REDACTED),
    (re.compile(r"\b(sk-(?:proj-|ant-)?)[A-Za-z0-9_-]{16,}"), r"\1" + REDACTED),
    # Credentials inside URLs: postgresql://user:password@host, redis://:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,15}://[^:/?#\s@]{0,256}:)[^@/?#\s]+@"), r"\1" + REDACTED + "@"),
    (
        re.compile(rf"(?i)(?<![A-Za-z0-9])((?:[A-Za-z0-9]+[_-]){{0,3}}{_SECRET_NAME}[\"']?\s*[=:]\s*[\"']?)[^&\s\"',}}]+"),
        r"\1" + REDACTED,
    ),
]

# Every pattern above needs one of these; most log strings (paths, ids, methods) have none and skip the scan.
_TRIGGERS = ("bearer", "basic", "lnos_", "eyj", "_live_", "_test_", "whsec_", "sk-")


def _may_hold_secret(text: str) -> bool:
    if "=" in text or ":" in text:
        return True
    lowered = text.lower()
    return any(trigger in lowered for trigger in _TRIGGERS)


_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def redact_text(text: str) -> str:
    if not _may_hold_secret(text):
        return text
    for pattern, replacement in SECRET_VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@lru_cache(maxsize=4096)
def _secret_name(key: str) -> bool:
    return SECRET_FIELD.search(key) is not None


def redact(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    # Only strings can hold a credential; counters such as `tokens_used` stay readable.
    if key is not None and isinstance(value, (str, bytes)) and value and _secret_name(key):
        return REDACTED
    if _depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, None, _depth + 1) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Redacts every record, except the fields of records built already redacted
    (`extra={"_redacted": True, ...}`: the access log line, one per request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False) and not record.args and not record.exc_info:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        record.msg, record.args = redact_text(message), None
        if record.exc_info:
            # Format now so the traceback text is redacted too, then drop the raw info.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        if getattr(record, "_redacted", False):
            return True
        for attr, value in list(record.__dict__.items()):
            if attr not in _STD_ATTRS:
                setattr(record, attr, redact(value, attr))
        return True


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then every `extra` field."""

    _last: tuple[int, str] = (-1, "")

    def timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._last[0]:  # the timestamp text changes once a second
            self._last = (second, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second)))
        return self._last[1]

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": self.timestamp(record.created), "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        for attr, value in record.__dict__.items():
            if attr not in _STD_ATTRS and not attr.startswith("_"):
                line[attr] = value
        if record.exc_text:
            line["exc_info"] = record.exc_text
        elif record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return ascii_json(line)


def _sole_json_handler(logger: logging.Logger) -> LineHandler | None:
    """Our JSON handler, when it is the only handler a record of `logger` would reach and no
    logger on the way filters; else None (another handler, e.g. pytest's caplog, is listening)."""
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None or not getattr(handler, "_lunaos", False):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if (isinstance(found, LineHandler) and isinstance(found.formatter, JsonLineFormatter)
            and found.level <= logging.INFO):
        return found
    return None


def write_redacted(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """An INFO line whose fields the caller has already redacted (the access line, one per request).

    When our JSON handler is the only one listening, the line it would format is written to its
    stream directly: making a LogRecord and passing it through the filter and the formatter cost
    about a fifth of a small request. Anything else listening gets an ordinary record.
    """
    handler = _sole_json_handler(logger)
    if handler is None:
        logger.info(message, extra={"_redacted": True, **fields})
        return
    formatter: JsonLineFormatter = handler.formatter  # type: ignore[assignment]
    line = ascii_json({"time": formatter.timestamp(time.time()), "level": "INFO", "logger": logger.name,
                        "message": message, **fields})
    handler.write_line(line + handler.terminator)


class LineHandler(logging.StreamHandler):
    """A StreamHandler that writes access lines in batches: one write per `flush_seconds`
    (or per MAX_PENDING lines) instead of a system call per request.

    Every other record first writes out the lines before it, so the stream keeps their order;
    `flush()` (called by logging at exit, and by `setStream`) writes them out too. A flusher
    thread (a greenlet under gevent), started in each process on its first buffered line,
    writes out what a quiet period leaves behind. `flush_seconds` 0 writes each line at once.
    """

    MAX_PENDING = 256

    def __init__(self, stream: Any = None, flush_seconds: float = 0.0) -> None:
        super().__init__(stream)
        self.flush_seconds = flush_seconds
        self._pending: list[str] = []
        self._oldest = 0.0
        self._pending_lock = threading.Lock()  # only around the list: cheap, never held while writing
        self._flusher_pid = 0

    def write_line(self, text: str) -> None:
        if self.flush_seconds <= 0:
            self._write([text])
            return
        now = time.monotonic()
        with self._pending_lock:
            pending = self._pending
            if not pending:
                self._oldest = now
            pending.append(text)
            due = len(pending) >= self.MAX_PENDING or now - self._oldest >= self.flush_seconds
        if due:
            self.write_pending()
        elif self._flusher_pid != current_pid():
            self._start_flusher()

    def write_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        if pending:
            self._write(pending)

    def _write(self, lines: list[str]) -> None:
        with self.lock:  # type: ignore[union-attr] # in order with emit()
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:  # noqa: BLE001 - as logging does: a broken stream must not fail the request
                pass

    def emit(self, record: logging.LogRecord) -> None:
        self.write_pending()
        super().emit(record)

    def flush(self) -> None:
        self.write_pending()
        super().flush()

    def close(self) -> None:
        self.write_pending()
        super().close()

    def _start_flusher(self) -> None:
        with self._pending_lock:
            if self._flusher_pid == current_pid():
                return
            self._flusher_pid = current_pid()  # threads do not survive a fork: one per process
        threading.Thread(target=_flush_periodically, args=(weakref.ref(self), self.flush_seconds),
                         name="lunaos-log-flusher", daemon=True).start()


def _flush_periodically(ref: weakref.ref[LineHandler], interval: float) -> None:
    """Write out what waits in the handler every flush_seconds, until the handler is gone."""
    interval = max(interval, 0.01)
    while True:
        time.sleep(interval)
        handler = ref()
        if handler is None:
            return
        interval = max(handler.flush_seconds, 0.01)
        handler.write_pending()
        del handler  # not kept alive by the wait


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS and not k.startswith("_")}
        return f"{base} {extras}" if extras else base


def configure(level: str = "INFO", json_lines: bool = True, stream: Any = None,
              flush_seconds: float = 0.0) -> logging.Handler:
    """Install one redacting handler on the root logger (idempotent)."""
    # Our lines carry no caller file/line: skip the stack walk that finds it for every record
    # (the costliest switch the logging HOWTO lists under "Optimization"). Thread and process
    # stay on: other handlers' formats use them (gunicorn's own lines print `%(process)d`).
    logging._srcfile = None  # type: ignore[attr-defined]
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_lunaos", False):
            root.removeHandler(handler)
    handler = LineHandler(stream or sys.stderr, flush_seconds)
    handler._lunaos = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    if json_lines:
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
