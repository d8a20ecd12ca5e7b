"""Appenders: what writes the decision log's sealed bytes, in order, from a thread of its own.

``DecisionLog`` masks and seals each entry, then hands the bytes to an appender and (with
``audit.sync``) waits for its ticket.  Two implementations with one contract:

- ``FileAppender`` from the compiled front (``aegis_grpc_front``, ``extauthz/native``): its
  thread needs no GIL, so a synchronous record costs one thread wake-up each way and no GIL
  hand-off (docs/performance.md, "The signed decision log on the current code");
- ``ThreadAppender``: the same in Python, used without the extension and for a file object
  given by the caller (tests inject full and stalled disks through ``opener`` and ``stream``).

The contract: tickets are written in order; a failed write keeps the rest of its bytes and
retries with backoff, reporting the errno until a write succeeds (nothing dropped or
duplicated); ``wait`` gives up after its timeout or as soon as writes fail; ``append``
waits for room beyond ``capacity`` queued commands (never drops), or says it would have to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

MAX_BACKOFF_S = 5.0
_NEVER = 2**63
EIO = errno.EIO

# (last ticket written, failed writes so far, errno while writes fail or None, commands queued)
AppenderState = tuple[int, int, int | None, int]


class Appender(Protocol):
    def append(self, data: bytes, sync: bool, wait_for_room: bool) -> int | None:
        """Queue ``data`` (fsync'ed after it when ``sync``): its ticket, or None when the
        queue is full and not ``wait_for_room``."""
        ...

    def rotate(self, rotated: Path, header: bytes, wait_for_room: bool) -> int | None:
        """After what is queued: rename the file to ``rotated``, start a new one with
        ``header``; as ``append``."""
        ...

    def wait(self, ticket: int, timeout: float) -> bool:
        """True once ``ticket`` is written; False after ``timeout`` or while writes fail."""
        ...

    def wait_progress(self, written: int | None, errors: int, timeout: float) -> AppenderState:
        """Return once more than ``written`` is written (None: writes do not wake this
        waiter) or more than ``errors`` writes failed, or after ``timeout``."""
        ...

    def state(self) -> AppenderState: ...

    def close(self, timeout: float) -> bool:
        """Write what is queued, then stop; False if that took longer than ``timeout``."""
        ...


def error_text(code: int) -> str:
    return f"write failed: {errno.errorcode.get(code, 'EIO')}"


class ThreadAppender:
    """``Appender`` in Python: writes to ``stream``, or to files from ``opener(path)``."""

    def __init__(
        self,
        path: Path | None,
        *,
        opener: Callable[[Path], BinaryIO] | None = None,
        stream: BinaryIO | None = None,
        retry_s: float = 0.05,
        capacity: int = 10_000,
    ) -> None:
        if (path is None) == (stream is None):
            raise ValueError("an appender writes to a path or to a stream")
        self._path, self._stream = path, stream
        self._fh: BinaryIO | None = None
        self._opener = opener or (lambda p: p.open("ab", buffering=0))
        self._retry_s, self._capacity = retry_s, max(1, capacity)
        self._queue: deque[tuple[int, bytes | None, bool, Path | None]] = deque()
        self._issued = self._written = self._errors = 0
        self._failing: int | None = None
        self._stopping = self._stopped = False
        lock = threading.Lock()
        self._changed = threading.Condition(lock)
        # The housekeeping thread waits here, for errors and the stop only: woken by every
        # write, it would cost each synchronous decision another thread wake-up.
        self._events = threading.Condition(lock)
        self._thread = threading.Thread(target=self._run, name="aegis-decision-log-appender", daemon=True)
        self._thread.start()

    # --- the contract ---------------------------------------------------------------------

    def append(self, data: bytes, sync: bool, wait_for_room: bool) -> int | None:
        return self._push(data, sync, None, wait_for_room)

    def rotate(self, rotated: Path, header: bytes, wait_for_room: bool) -> int | None:
        return self._push(header, False, rotated, wait_for_room)

    def wait(self, ticket: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._written < ticket:
                left = deadline - time.monotonic()
                if self._failing is not None or left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_progress(self, written: int | None, errors: int, timeout: float) -> AppenderState:
        deadline = time.monotonic() + timeout
        condition, after = (self._events, _NEVER) if written is None else (self._changed, written)
        with condition:
            while self._written <= after and self._errors <= errors and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                condition.wait(left)
            return self._state()

    def state(self) -> AppenderState:
        with self._changed:
            return self._state()

    def close(self, timeout: float) -> bool:
        with self._changed:
            if self._stopping:
                return True
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the thread -----------------------------------------------------------------------

    def _state(self) -> AppenderState:
        return self._written, self._errors, self._failing, len(self._queue)

    def _push(self, data: bytes, sync: bool, rotated: Path | None, wait_for_room: bool) -> int | None:
        with self._changed:
            while len(self._queue) >= self._capacity and not self._stopping:
                if not wait_for_room:
                    return None
                self._changed.wait()
            if self._stopping:
                raise RuntimeError("the decision log's appender is closed")
            self._issued += 1
            self._queue.append((self._issued, data, sync, rotated))
            self._changed.notify_all()
            return self._issued

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if not self._queue:  # stopping, everything written
                    break
                batch = list(self._queue)
                self._queue.clear()
                self._changed.notify_all()  # room for blocked appenders
            pending = bytearray()
            for ticket, data, sync, rotated in batch:
                if rotated is not None:
                    self._write(bytes(pending), False)
                    pending = bytearray()
                    self._rotate(rotated)
                pending += data or b""
                if sync:  # the tickets before this one wait for their bytes, not for the fsync
                    self._write(bytes(pending), False)
                    pending = bytearray()
                    self._publish(ticket - 1)
                    self._write(b"", True)
            self._write(bytes(pending), False)
            self._publish(batch[-1][0])
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            self._events.notify_all()
        if self._fh is not None:
            self._fh.close()

    def _publish(self, written: int) -> None:
        with self._changed:
            self._written, self._failing = max(self._written, written), None
            self._changed.notify_all()

    def _target(self) -> BinaryIO:
        if self._stream is not None:
            return self._stream
        if self._fh is None:
            assert self._path is not None
            self._fh = self._opener(self._path)
        return self._fh

    def _retrying(self, attempt: Callable[[], None]) -> None:
        delay = self._retry_s
        while True:
            try:
                attempt()
                return
            except OSError as exc:
                with self._changed:
                    self._failing, self._errors = exc.errno or EIO, self._errors + 1
                    self._changed.notify_all()  # waiting callers give up now
                    self._events.notify_all()
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    def _write(self, data: bytes, sync: bool) -> None:
        view = memoryview(data)

        def attempt() -> None:
            nonlocal view
            target = self._target()
            while view:
                written = target.write(view)
                view = view[written or 0 :]
            target.flush()
            if sync and self._fh is not None:
                try:
                    os.fsync(self._fh.fileno())
                except OSError as exc:  # a pipe or a character device cannot be synced
                    if exc.errno != errno.EINVAL:
                        raise

        if data or sync:
            self._retrying(attempt)

    def _rotate(self, rotated: Path) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        path = self._path
        if path is None:
            return

        def attempt() -> None:
            with contextlib.suppress(FileNotFoundError):
                path.rename(rotated)

        self._retrying(attempt)


def open_appender(
    path: Path | None,
    *,
    opener: Callable[[Path], BinaryIO] | None = None,
    stream: BinaryIO | None = None,
    retry_s: float = 0.05,
    capacity: int = 10_000,
) -> Appender:
    """The compiled appender for a path (or standard output), unless the extension is missing,
    ``AEGIS_AUDIT_APPENDER=python``, or the caller brings its own file object."""
    if opener is None and stream is None and os.environ.get("AEGIS_AUDIT_APPENDER", "native") != "python":
        try:
            from aegis_grpc_front import FileAppender
        except ImportError:  # pragma: no cover - depends on the installation
            FileAppender = None
        if FileAppender is not None:
            return FileAppender(str(path) if path is not None else None, retry_s, capacity)  # type: ignore[no-any-return]
    if path is None and stream is None:
        stream = sys.stdout.buffer
    return ThreadAppender(path, opener=opener, stream=stream, retry_s=retry_s, capacity=capacity)
