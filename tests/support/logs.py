"""Reading what the app's log handler wrote, including the access lines it holds back."""
from __future__ import annotations

import io
import logging


class HandlerBuffer(io.StringIO):
    """A stream for the app's handler; reading it first makes the handler write out its batch."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def getvalue(self) -> str:
        self.handler.flush()
        return super().getvalue()


def capture(app) -> HandlerBuffer:
    """Point the app's real handler (redaction filter, JSON formatter, batching) at a buffer."""
    handler = app.extensions["lunaos.log_handler"]
    buffer = HandlerBuffer(handler)
    handler.setStream(buffer)
    return buffer
