"""Notifications leave the request path: a bounded queue, one worker thread, retries with backoff.

``Dispatcher.submit`` never blocks: a full queue drops the notification (counted and
logged) and the approval is still in the store and on the console, so nothing is lost.
A failed attempt is retried after ``backoff * 2**attempt`` without holding up other jobs.
Per-notifier health (last success, last error code, consecutive failures) feeds /readyz.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from extauthz.approvals.audit import audit
from extauthz.errors import AegisError
from extauthz.store import NotificationRef, PendingApproval, Store
from extauthz.telemetry import Metrics

log = logging.getLogger("aegis.approvals")
DEFAULT_QUEUE_SIZE = 1000


class NotifyError(Exception):
    """A notifier could not deliver; ``code`` is safe to log and show (no URLs, no tokens)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class ApprovalCard:
    """What a notifier shows: the approval (args already redacted) and the approver links."""

    approval: PendingApproval
    console_url: str
    approve_url: str = ""
    deny_url: str = ""


class Notifier(Protocol):
    """One notification target; ``name`` is its metric label (kind and channel, never a URL)."""

    name: str

    def requested(self, card: ApprovalCard) -> NotificationRef | None:
        """Announce a new approval; optionally return where, to update it later."""
        ...

    def decided(self, card: ApprovalCard, ref: NotificationRef | None) -> None:
        """Tell approvers the outcome (approved / denied / expired)."""
        ...


@dataclass
class NotifierHealth:
    sent: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    notifier: Notifier = field(compare=False)
    event: str = field(compare=False)
    card: ApprovalCard = field(compare=False)
    attempt: int = field(compare=False, default=0)


class Dispatcher:
    """Runs notifier calls in a background thread."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        attempts: int,
        backoff_s: float,
        max_queue: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_queue = max_queue
        self._clock = clock
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._health: dict[str, NotifierHealth] = {}
        self._thread = threading.Thread(target=self._run, name="aegis-notify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, notifier: Notifier, event: str, card: ApprovalCard) -> bool:
        """Queue one notification; False (counted, logged) if the queue is full."""
        with self._cond:
            self._health.setdefault(notifier.name, NotifierHealth())
            if len(self._heap) >= self._max_queue:
                self._metrics.notifications.labels(notifier.name, "dropped").inc()
                log.warning("notification dropped: queue full", extra={"aegis": {"approval_id": card.approval.id}})
                return False
            heapq.heappush(self._heap, _Job(self._clock(), next(self._seq), notifier, event, card))
            self._cond.notify()
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def health(self) -> dict[str, Any]:
        """/readyz detail: notifier failures are reported, never make the service unready."""
        with self._cond:
            notifiers = {name: vars(h).copy() for name, h in self._health.items()}
            queued = len(self._heap)
        failing = sorted(n for n, h in notifiers.items() if h["consecutive_failures"])
        return {"ok": True, "queued": queued, "failing": failing, "notifiers": notifiers}

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._stopped:
                if self._heap and self._heap[0].due <= self._clock():
                    return heapq.heappop(self._heap)
                wait = (self._heap[0].due - self._clock()) if self._heap else None
                self._cond.wait(wait)
        return None

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            try:
                self._deliver(job)
            except Exception:  # a bug in one notifier must not stop the worker
                log.exception("notifier crashed", extra={"aegis": {"notifier": job.notifier.name}})

    def _deliver(self, job: _Job) -> None:
        name, approval = job.notifier.name, job.card.approval
        try:
            if job.event == "requested":
                ref = job.notifier.requested(job.card)
                if ref is not None:
                    self._store.save_notification_ref(ref)
            else:
                refs = [r for r in self._store.notification_refs(approval.id) if r.target == name]
                job.notifier.decided(job.card, refs[0] if refs else None)
        except (NotifyError, AegisError) as exc:
            code = exc.code
            with self._cond:
                health = self._health[name]
                health.consecutive_failures += 1
                health.last_error = code
                if job.attempt + 1 < self._attempts:
                    job.attempt += 1
                    job.due = self._clock() + self._backoff_s * 2 ** (job.attempt - 1)
                    heapq.heappush(self._heap, job)
                    self._cond.notify()
                    self._metrics.notifications.labels(name, "retried").inc()
                    return
                health.failed += 1
            self._metrics.notifications.labels(name, "failed").inc()
            audit(
                "notify_failed", approval, notifier=name, notify_event=job.event, error=code, attempts=job.attempt + 1
            )
            return
        with self._cond:
            health = self._health[name]
            health.sent += 1
            health.consecutive_failures = 0
            health.last_ok_at = time.time()
        self._metrics.notifications.labels(name, "sent").inc()
        audit("notified", approval, notifier=name, notify_event=job.event)
