"""The service's log output: one JSON line per record, block-buffered, flushed on a timer.

Every decision writes a line, and ``logging.StreamHandler`` flushes after each one: a
``write(2)`` per call on the hot path (stderr is line-buffered besides).  Here lines collect
in a 64 KiB buffer that a daemon thread, waking every ``FLUSH_INTERVAL_S``, flushes when it
holds anything, as Envoy flushes its access log (``--file-flush-interval-msec``): a line waits
at most that long.  Warnings and errors are flushed at once, and so is everything at close
(``logging.shutdown`` at exit), after which every line is written at once.
What a killed process (SIGKILL) loses is its last fraction of a second of operational lines;
the signed decision log (``audit``) has its own durability and is not written here.
"""

from __future__ import annotations

import logging
import threading
from typing import TextIO

FLUSH_INTERVAL_S = 0.2
BUFFER_BYTES = 64 * 1024


class BufferedLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` on file descriptor ``fd`` (not closed with it) whose lines below
    ``flush_level`` wait in a buffer for at most ``interval_s``."""

    def __init__(self, fd: int, *, interval_s: float = FLUSH_INTERVAL_S, flush_level: int = logging.WARNING) -> None:
        stream: TextIO = open(  # noqa: SIM115 - lives as long as the handler; the fd is not closed
            fd, "w", buffering=BUFFER_BYTES, encoding="utf-8", errors="backslashreplace", closefd=False
        )
        super().__init__(stream)
        self._interval_s = interval_s
        self._flush_level = flush_level
        self._pending = False  # lines written since the last flush
        self._stopping = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="aegis-log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle).
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= self._flush_level or self._stopping.is_set():
                self._flush_locked()
            else:
                self._pending = True
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._pending = False
        if not self.stream.closed:
            self.stream.flush()

    def _flush_loop(self) -> None:
        while not self._stopping.wait(self._interval_s):
            if self._pending:
                try:
                    self.flush()
                except (OSError, ValueError):  # the descriptor went away: nothing left to flush to
                    return

    def close(self) -> None:
        """Flush and stop the timer.  The stream stays open, unbuffered from now on: a library
        that reconfigures logging (``logging.config.dictConfig`` closes every handler) must
        not silence the service, and the descriptor is stderr's, not this handler's."""
        self._stopping.set()
        self.flush()
        super().close()


__all__ = ["BUFFER_BYTES", "FLUSH_INTERVAL_S", "BufferedLogHandler"]
