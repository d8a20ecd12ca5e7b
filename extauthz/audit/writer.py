"""``DecisionLog``: the decision-log sink, and the threads around it.

Hot path: ``__call__(record)`` masks the record (``entry``; a masking bug writes the entry
without its values, never drops it) and seals it into the chain (``chain``) on the caller's
thread, then hands the bytes to the appender (``appender``: a thread outside the GIL when the
compiled front is built).  With ``audit.sync`` (the default) it waits, with the GIL released,
until they are written: a killed service loses no record of an answer it gave.  False (not
written within ``SYNC_TIMEOUT_S``, or the log is failing) makes the Authorizer answer 503
``decision_log_unavailable`` instead, and a ``decision.withheld`` event says so.  With
``audit.sync: false`` the record is queued and a sealing thread masks and seals it, so the
answer does not wait for either.  A full queue makes callers wait; nothing is dropped.

Write errors (disk full…): the appender keeps the sealed bytes and retries the remaining ones
with backoff (nothing lost or duplicated, the chain intact), /readyz reports not ready, and
``check_writable`` makes the Authorizer refuse every new call before any side effect.  So
the log blocks rather than buffers: memory holds only the records of refused calls and of
those in flight when the first write failed (docs/security.md, "Fault injection").

Signed fsync'ed checkpoints every ``checkpoint_every`` entries (sealed right after the Nth)
or ``checkpoint_seconds``, rotation beyond ``max_bytes`` (``<stem>.<first seq>.jsonl``; the
next file's header continues the chain).  A housekeeping thread seals the timed checkpoints,
counts write errors, and hands written entries to ``forward`` (OTLP logs; best effort, never
on the hot path).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.audit import chain
from extauthz.audit.appender import Appender, error_text, open_appender
from extauthz.audit.entry import decision_entry, event_entry, fallback_entry, rfc3339
from extauthz.audit.keys import load_private
from extauthz.audit.settings import AuditConfig
from extauthz.decision_record import DecisionRecord
from extauthz.errors import ConfigError, DecisionLogError

if TYPE_CHECKING:
    from extauthz.config import TelemetryConfig

log = logging.getLogger("aegis.audit.writer")
# How long an answer waits for its record (audit.sync): below Envoy's 1 s ext_authz timeout,
# so an agent refused for it gets Aegis's reason rather than Envoy's bare 503.
SYNC_TIMEOUT_S = 0.8
WITHHELD = "decision.withheld"
HOUSEKEEPING_S = 1.0  # the longest the housekeeping thread sleeps (error counts, forwarding)
FORWARD_BATCH_S = 0.01  # forwarding waits this long after a write, to take several at once
_STOP = object()


class AuditMetrics(Protocol):
    """The metrics the writer updates (``extauthz.telemetry.Metrics`` has them)."""

    decision_log_entries: Any
    decision_log_write_errors: Any
    decision_log_checkpoints: Any
    decision_log_blocked: Any
    decision_log_queue: Any


class EntryForwarder(Protocol):
    """Where written entries also go (the OTLP logs delivery)."""

    def emit(self, entry: Mapping[str, Any], seq: int, line: bytes) -> None: ...

    def shutdown(self) -> None: ...


def _version() -> str:
    try:
        return metadata.version("aegis-gateway")
    except metadata.PackageNotFoundError:
        return "dev"


def rotated_name(path: Path, first_seq: int) -> Path:
    """``decisions.jsonl`` whose first entry is seq 42 → ``decisions.000000000042.jsonl``."""
    return path.with_name(f"{path.stem}.{first_seq:012d}{path.suffix}")


def _read_tail(path: Path) -> tuple[bytes, bool]:
    """The last complete line of a file and whether the file ends mid-line (a torn write)."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - (1 << 20)))
        data = fh.read()
    torn = not data.endswith(b"\n")
    lines = data.splitlines()
    if torn and lines:
        lines.pop()
    return (lines[-1] if lines else b""), torn


class DecisionLog:
    """The sink the Authorizer calls once per decision; see the module docstring."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        metrics: AuditMetrics | None = None,
        opener: Callable[[Path], BinaryIO] | None = None,
        stream: BinaryIO | None = None,
        clock: Callable[[], float] = time.time,
        retry_s: float = 0.05,
        forward: EntryForwarder | None = None,
    ) -> None:
        if not config.enabled:
            raise ConfigError("audit.path is not set: no decision log to open")
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._key: Ed25519PrivateKey | None = load_private(config.signing_key) if config.signing_key else None
        fingerprint = chain.key_fingerprint(self._key.public_key()) if self._key else ""
        self._key_id = config.key_id or fingerprint
        self.labels = {"app": "aegis", "id": uuid.uuid4().hex, "version": _version()}
        # Sealing: the chain's head and seq, the counts behind checkpoints and rotation, and the
        # order of tickets, which must be the order of seqs.
        self._lock = threading.Lock()
        self._head, self._seq = chain.GENESIS, 0  # hash of the last entry, seq of the next one
        self._since_checkpoint, self._last_checkpoint = 0, clock()
        self._size, self._file_first_seq = 0, 0  # bytes sealed into the current file
        # (ticket, entries written once it is, and what to forward): pruned as tickets are written.
        # Its own lock: health checks read it while a caller may hold ``_lock`` waiting for room.
        self._tickets: deque[tuple[int, int, list[tuple[dict[str, Any], int, bytes]]]] = deque()
        self._tickets_lock = threading.Lock()
        self._written_ticket = self._errors_seen = self._written_entries = 0
        self.blocked = self.checkpoints = 0
        self._unforwarded: list[tuple[dict[str, Any], int, bytes]] = []  # sealed, not yet queued
        self._closed = False
        self._bridge: _AuditBridge | None = None
        self._forward = forward
        stdout_stream = stream if config.stdout else None
        if stream is not None and not config.stdout:
            raise ValueError("a stream is the decision log's target only with audit.stdout")
        self._rotates = not config.stdout
        if not config.stdout:
            self._resume_chain()
        self._appender: Appender = open_appender(
            None if config.stdout else self._path,
            opener=opener,
            stream=stdout_stream,
            retry_s=retry_s,
            capacity=config.queue_size,
        )
        self._queue: queue.Queue[Any] | None = None  # audit.sync: false — the sealing thread's
        if not config.sync:
            self._queue = queue.Queue(maxsize=config.queue_size)
        if metrics is not None:
            metrics.decision_log_queue.set_function(self._queued)
        if self._size == 0:
            with self._lock:
                self._start_file()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._housekeeping, name="aegis-decision-log", daemon=True)]
        if self._queue is not None:
            self._threads.append(threading.Thread(target=self._sealing, name="aegis-decision-log-seal", daemon=True))
        for thread in self._threads:
            thread.start()

    # --- the hot path -------------------------------------------------------------------

    def __call__(self, record: DecisionRecord) -> bool:
        """Log one decision: with ``sync``, True once written; False if the log is failing or
        the write took longer than ``SYNC_TIMEOUT_S`` (the caller must then refuse the call).
        Never drops the record: it stays queued and is written when the disk allows."""
        if self._queue is not None:
            self._enqueue(record)
            return True
        ticket = self._append([self._to_entry(record)])
        if self.last_error is not None:  # failing: held and retried, not worth waiting for
            return False
        if self._appender.wait(ticket, SYNC_TIMEOUT_S):
            return True
        if record.error_code != DecisionLogError.code:
            self.event(WITHHELD, {"decision_id": record.decision_id, "answer": 503, "error": DecisionLogError.code})
        return False

    def check_writable(self) -> None:
        """Raise DecisionLogError while writes fail: the Authorizer refuses new calls (503)."""
        error = self.last_error
        if error is not None:
            raise DecisionLogError(f"the decision log cannot be written ({error}); calls are refused until it can")

    def event(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Append an audit event (e.g. ``approval.approved`` with ``approval_id``…) to the log.

        String values pass through dlp; never put tokens or secrets in ``fields``.
        """
        item = (kind, dict(fields), self._clock())
        if self._queue is not None:
            self._enqueue(item)
        else:
            self._append([self._to_entry(item)])

    @property
    def last_error(self) -> str | None:
        """Why writes fail, while they do."""
        failing = self._appender.state()[2]
        return None if failing is None else error_text(failing)

    @property
    def write_errors(self) -> int:
        return self._appender.state()[1]

    @property
    def written(self) -> int:
        """Entries on disk."""
        self._note_written(self._appender.state()[0])
        return self._written_entries

    def _enqueue(self, item: Any) -> None:
        if self._closed:
            raise RuntimeError("the decision log is closed")
        assert self._queue is not None
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._blocked()
            self._queue.put(item)

    def _blocked(self) -> None:
        self.blocked += 1
        if self._metrics is not None:
            self._metrics.decision_log_blocked.inc()

    def _queued(self) -> int:
        return self._appender.state()[3] + (self._queue.qsize() if self._queue is not None else 0)

    # --- sealing ----------------------------------------------------------------------------

    def _to_entry(self, item: Any) -> dict[str, Any]:
        try:
            if isinstance(item, DecisionRecord):
                return decision_entry(item, self.labels)
            kind, fields, timestamp = item
            return event_entry(kind, fields, timestamp, self.labels)
        except Exception:
            # A masking bug must neither stop the log nor drop the record: keep what carries
            # no PII (ids, outcome, version) and say that the rest was left out.
            log.exception("decision log: masking failed; the entry is written without its values")
            return fallback_entry(item, self.labels)

    def _append(self, entries: list[dict[str, Any]]) -> int:
        """Seal ``entries`` (and the checkpoint or rotation they make due) and queue them for
        writing, in one step; the ticket of the last entry's bytes."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the decision log is closed")
            lines: list[bytes] = []
            ticket = 0
            for entry in entries:
                lines.append(self._seal(entry))
                if self._since_checkpoint >= self._config.checkpoint_every:  # exactly every N entries
                    ticket = self._queue_bytes(b"".join(lines), False)
                    lines = []
                    self._checkpoint()  # fsync'ed; the entries before it do not wait for that
            if lines:
                ticket = self._queue_bytes(b"".join(lines), False)
            if self._rotates and self._size >= self._config.max_bytes:
                self._rotate()
            return ticket

    def _seal(self, entry: dict[str, Any]) -> bytes:
        line, self._head = chain.seal(entry, self._head, self._seq)
        if self._forward is not None:
            self._unforwarded.append((entry, self._seq, line))
        self._seq += 1
        if entry["type"] == "checkpoint":
            self._since_checkpoint, self._last_checkpoint = 0, self._clock()
            self.checkpoints += 1
            if self._metrics is not None:
                self._metrics.decision_log_checkpoints.inc()
        else:
            self._since_checkpoint += 1
        if self._metrics is not None:
            self._metrics.decision_log_entries.labels(entry["type"]).inc()
        self._size += len(line) + 1
        return line + b"\n"

    def _queue_bytes(self, data: bytes, sync: bool, rotated: Path | None = None) -> int:
        def queue_it(wait_for_room: bool) -> int | None:
            if rotated is None:
                return self._appender.append(data, sync, wait_for_room)
            return self._appender.rotate(rotated, data, wait_for_room)

        ticket = queue_it(False)
        if ticket is None:  # full: counted, then wait for room (never drop)
            self._blocked()
            ticket = cast(int, queue_it(True))
        forwarded: list[tuple[dict[str, Any], int, bytes]] = []
        if self._forward is not None:
            forwarded, self._unforwarded = self._unforwarded, []
        with self._tickets_lock:
            self._tickets.append((ticket, self._seq, forwarded))
        return ticket

    def _checkpoint_entry(self) -> dict[str, Any]:
        return chain.checkpoint_entry(self._head, self._seq, self._key_id, self._key, rfc3339(self._clock()))

    def _checkpoint(self) -> int:
        """Seal and queue a checkpoint (fsync'ed); its ticket.  Under the lock."""
        return self._queue_bytes(self._seal(self._checkpoint_entry()), True)

    def _rotate(self) -> int:
        """Checkpoint, then continue the chain in a new file.  Under the lock."""
        if self._since_checkpoint:
            self._checkpoint()
        rotated = rotated_name(self._path, self._file_first_seq)
        self._size, self._file_first_seq = 0, self._seq
        return self._queue_bytes(self._seal(self._header()), False, rotated)

    # --- the threads ------------------------------------------------------------------------

    def _sealing(self) -> None:
        """``audit.sync: false``: mask and seal what callers queued, in batches."""
        assert self._queue is not None
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while len(items) < 256:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is _STOP for item in items)
            entries = [self._to_entry(item) for item in items if item is not _STOP]
            if entries:
                self._append(entries)

    def _housekeeping(self) -> None:
        """Timed checkpoints, write errors counted and logged, written entries forwarded."""
        while not self._stop.is_set():
            due = self._last_checkpoint + self._config.checkpoint_seconds - self._clock()
            timeout = max(0.01, min(HOUSEKEEPING_S, due))
            # Woken by writes only to forward them: otherwise each decision would wake this thread.
            after = self._written_ticket if self._forward is not None else None
            written, errors, failing, _ = self._appender.wait_progress(after, self._errors_seen, timeout)
            if self._stop.is_set():
                break
            self._note_errors(errors, failing)
            self._note_written(written)
            # Not while a caller seals, or waits for room: the next round will do.
            if self._lock.acquire(blocking=False):
                try:
                    idle = self._clock() - self._last_checkpoint >= self._config.checkpoint_seconds
                    if self._closed:
                        break
                    if idle and self._since_checkpoint:
                        self._checkpoint()
                    elif not self._since_checkpoint:
                        self._last_checkpoint = self._clock()
                finally:
                    self._lock.release()
            if self._forward is not None:
                time.sleep(FORWARD_BATCH_S)

    def _note_errors(self, errors: int, failing: int | None) -> None:
        with self._tickets_lock:  # read by health checks and the housekeeping thread
            new, self._errors_seen = errors - self._errors_seen, max(errors, self._errors_seen)
        if new <= 0:
            return
        if self._metrics is not None:
            self._metrics.decision_log_write_errors.inc(new)
        log.error("decision log write failed; retrying", extra={"aegis": {"errno": failing, "failures": new}})

    def _note_written(self, written_ticket: int) -> None:
        """Entries written so far, and those to forward now that they are on disk."""
        forward: list[tuple[dict[str, Any], int, bytes]] = []
        with self._tickets_lock:
            self._written_ticket = max(self._written_ticket, written_ticket)
            while self._tickets and self._tickets[0][0] <= written_ticket:
                _, self._written_entries, forwarded = self._tickets.popleft()
                forward.extend(forwarded)
        if forward and self._forward is not None:
            try:
                for entry, seq, line in forward:
                    self._forward.emit(entry, seq, line)
            except Exception:  # forwarding is best effort; the file is the record
                log.exception("decision log: forwarding failed")

    # --- lifecycle ------------------------------------------------------------------------

    def attach_logger(self, name: str = "aegis.audit") -> None:
        """Also record what is logged on ``name`` (the approvals audit trail) as events."""
        self._bridge = _AuditBridge(self)
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:  # the transitions are INFO records
            logger.setLevel(logging.INFO)
        logger.addHandler(self._bridge)
        self._bridge_logger = name

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, a final checkpoint, fsync; then stop the threads."""
        if self._closed:
            return
        if self._bridge is not None:
            logging.getLogger(self._bridge_logger).removeHandler(self._bridge)
        if self._queue is not None:
            self._queue.put(_STOP)
            self._threads[1].join(timeout)
        with self._lock:
            if self._since_checkpoint:
                self._checkpoint()
            self._closed = True
        finished = self._appender.close(timeout)
        self._stop.set()
        self._threads[0].join(timeout)
        if not finished:
            log.error("decision log: could not finish writing", extra={"aegis": {"queued": self._queued()}})
        state = self._appender.state()
        self._note_errors(state[1], state[2])
        self._note_written(state[0])
        if self._forward is not None:  # after the final checkpoint was handed over
            self._forward.shutdown()

    def health(self) -> dict[str, Any]:
        """For /readyz: not ready while writes fail (entries are held and retried)."""
        written, errors, failing, _ = self._appender.state()
        self._note_errors(errors, failing)
        self._note_written(written)
        out: dict[str, Any] = {"ok": failing is None, "queued": self._queued(), "written": self._written_entries}
        if failing is not None:
            out["error"] = error_text(failing)
        return out

    @property
    def head(self) -> tuple[int, str]:
        """(entries sealed, hash of the last one)."""
        return self._seq, self._head

    # --- files ----------------------------------------------------------------------------

    @property
    def _path(self) -> Path:
        if self._config.path is None:
            raise ConfigError("audit.path is not set")
        return self._config.path

    def _resume_chain(self) -> None:
        """Continue the chain of an existing file (``_size`` > 0 then), or leave a new one to
        ``_start_file``."""
        path = self._path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (path.exists() and path.stat().st_size > 0):
            return
        last, torn = _read_tail(path)
        try:
            entry, stated, ok = chain.unseal(last)
        except ValueError:
            ok, entry, stated = False, {}, ""
        if not ok:
            raise ConfigError(f"audit.path: the last line of {path} is damaged; run 'aegis audit verify' on it")
        self._head, self._seq = stated, int(entry["seq"]) + 1
        if not torn:
            self._size = path.stat().st_size
            with path.open("rb") as fh:
                first, _, _ = chain.unseal(fh.readline().rstrip(b"\n"))
            self._file_first_seq = int(first["seq"])
            return
        # A crash mid-line: keep that file as it is (verify reports the torn line) and go on.
        log.error("decision log ends mid-line; continuing in a new file", extra={"aegis": {"file": str(path)}})
        path.rename(rotated_name(path, self._seq))

    def _header(self) -> dict[str, Any]:
        return {
            "type": "header",
            "format": chain.FORMAT_VERSION,
            "timestamp": rfc3339(self._clock()),
            "labels": self.labels,
        }

    def _start_file(self) -> None:
        self._size, self._file_first_seq = 0, self._seq
        self._queue_bytes(self._seal(self._header()), False)


class _AuditBridge(logging.Handler):
    """Forwards ``aegis.audit`` log records (approval transitions) to ``DecisionLog.event``."""

    def __init__(self, target: DecisionLog) -> None:
        super().__init__()
        self._target = target

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(getattr(record, "aegis", {}) or {})
        kind = str(fields.pop("event", record.getMessage()))
        with contextlib.suppress(RuntimeError):
            self._target.event(kind, fields)


def open_decision_log(
    config: AuditConfig, metrics: AuditMetrics | None, telemetry: TelemetryConfig | None = None
) -> DecisionLog | None:
    """The configured decision log, started, with approval transitions bridged in; or None.

    With ``telemetry`` exporting (``otlp_endpoint`` set, ``decision_log_otlp`` true) every
    written entry is also sent as an OTLP log record.
    """
    if not config.enabled:
        return None
    forward: EntryForwarder | None = None
    if telemetry is not None and telemetry.decision_log_export:
        from extauthz.audit.otlp import OtlpDecisionLog, OtlpLogMetrics  # the SDK only when used

        counters = cast(OtlpLogMetrics, metrics) if hasattr(metrics, "otlp_logs_dropped") else None
        forward = OtlpDecisionLog(telemetry, counters)
    decision_log = DecisionLog(config, metrics=metrics, forward=forward)
    decision_log.attach_logger("aegis.audit")
    return decision_log
