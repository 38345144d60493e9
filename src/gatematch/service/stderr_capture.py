"""Everything written to the process's stderr, by C libraries too, becomes a record of the structured log.

libpng, OpenCV, gRPC core and onnxruntime print plain-text lines to file descriptor 2 from C code, out of
Python logging's reach; under bad input that was thousands of lines inside the JSON log (issue 10). So the
server points descriptor 2 at a pipe, and a thread turns each line that arrives there into a log record of the
`gatematch.native` logger; the log handler writes to a copy of the original stderr. What Python itself prints
to sys.stderr (a warning, an uncaught exception in a thread) takes the same path, so the log stays one JSON
object per line whatever writes to it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import threading
from typing import TextIO

NATIVE_LOGGER = "gatematch.native"
MAX_LINE = 4096  # a longer run of bytes without a newline is logged in pieces
PIPE_BYTES = 1 << 20  # room for bursts while the reader thread waits for the GIL
JOIN_S = 2.0

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class StderrCapture:
    """Descriptor 2 redirected into a pipe drained by a thread; `stream` writes to the original stderr."""

    def __init__(self) -> None:
        self._original = os.dup(2)
        self.stream: TextIO = os.fdopen(os.dup(self._original), "w", buffering=1, encoding="utf-8")
        read_fd, self._write_fd = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe only means earlier back-pressure
            fcntl.fcntl(self._write_fd, _F_SETPIPE_SZ, PIPE_BYTES)
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        os.dup2(self._write_fd, 2)
        self._log = logging.getLogger(NATIVE_LOGGER)
        self._thread = threading.Thread(target=self._drain, name="gatematch-stderr", daemon=True)
        self._thread.start()

    def _emit(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip()
        if text.strip():
            self._log.warning(text, extra={"source": "stderr"})

    def _drain(self) -> None:
        pending = b""
        while chunk := self._reader.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._emit(line)
            while len(pending) > MAX_LINE:
                self._emit(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
        self._emit(pending)

    def close(self) -> None:
        """Put the original stderr back and log what is still in the pipe (at exit)."""
        os.dup2(self._original, 2)
        os.close(self._write_fd)
        self._thread.join(JOIN_S)


_capture: StderrCapture | None = None


def capture_stderr() -> TextIO:
    """Start capturing (once per process); returns the stream the log handler must write to."""
    global _capture
    if _capture is None:
        _capture = StderrCapture()
        atexit.register(_capture.close)
    return _capture.stream


class QuietStreamHandler(logging.StreamHandler):
    """A handler that never reports its own failures to sys.stderr: that is the captured pipe, whose reader
    would log the report through this handler again."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass
