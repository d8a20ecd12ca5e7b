"""``TicketQueue``: the bounded queue between the hot path and the writer thread, with tickets.

``put`` numbers each item in queue order (a ticket); the writer calls ``done(ticket)`` once
everything up to that item is written; ``wait(ticket, timeout)`` lets a caller block until
its own item is on disk (``audit.sync``), give up after ``timeout``, or stop early when
``failing()`` says the writer cannot write (``wake`` re-checks waiters after a failure).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any


class TicketQueue:
    """A FIFO of ``(ticket, item)``; ``put`` waits for room when full (never drops)."""

    def __init__(self, maxsize: int, on_blocked: Callable[[], None]) -> None:
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=maxsize)
        self._on_blocked = on_blocked
        self._put_lock = threading.Lock()  # a ticket is taken and queued as one step
        self._issued = self._done = 0
        self._changed = threading.Condition()

    def qsize(self) -> int:
        return self._queue.qsize()

    def put(self, item: Any) -> int:
        with self._put_lock:
            self._issued += 1
            ticket = self._issued
            try:
                self._queue.put_nowait((ticket, item))
            except queue.Full:
                self._on_blocked()
                self._queue.put((ticket, item))
        return ticket

    def get(self, timeout: float) -> tuple[int, Any]:
        """The next ``(ticket, item)``, waiting up to ``timeout`` (queue.Empty after)."""
        return self._queue.get(timeout=timeout)

    def get_nowait(self) -> tuple[int, Any]:
        return self._queue.get_nowait()

    def done(self, ticket: int) -> None:
        """Everything up to ``ticket`` is written."""
        if ticket <= self._done:
            return
        with self._changed:
            self._done = ticket
            self._changed.notify_all()

    def wake(self) -> None:
        """Waiters re-check ``failing`` (called when a write fails)."""
        with self._changed:
            self._changed.notify_all()

    def wait(self, ticket: int, timeout: float, failing: Callable[[], bool]) -> bool:
        """True once ``ticket`` is written; False after ``timeout`` or as soon as ``failing()``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._done < ticket:
                left = deadline - time.monotonic()
                if failing() or left <= 0:
                    return False
                self._changed.wait(left)
        return True
