"""``DecisionLog``: the decision-log sink and the thread that writes it.

Hot path: ``__call__(record)`` queues the raw record (``tickets.TicketQueue``) and, with
``audit.sync`` (the default), waits until the writer has written it: a killed service loses
no record of an answer it gave.  False (not written within ``SYNC_TIMEOUT_S``, or the log is
failing) makes the Authorizer answer 503 ``decision_log_unavailable`` instead, and a
``decision.withheld`` event says so.  A full queue makes callers wait; nothing is dropped.

Write errors (disk full…): the writer keeps the sealed bytes and retries the remaining ones
with backoff (nothing lost or duplicated, the chain intact), /readyz reports not ready, and
``check_writable`` makes the Authorizer refuse every new call before any side effect.  So
the log blocks rather than buffers: memory holds only the records of refused calls and of
those in flight when the first write failed (docs/security.md, "Fault injection").

Writer thread: masks and seals batches (``entry``, ``chain``; a masking bug writes the entry
without its values, never drops it), unbuffered writes, signed fsync'ed checkpoints every
``checkpoint_every`` entries or ``checkpoint_seconds``, rotation beyond ``max_bytes``
(``<stem>.<first seq>.jsonl``; the next file's header continues the chain), then hands
written entries to ``forward`` (OTLP logs; best effort, never on the hot path).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.audit import chain
from extauthz.audit.entry import decision_entry, event_entry, fallback_entry, rfc3339
from extauthz.audit.keys import load_private
from extauthz.audit.settings import AuditConfig
from extauthz.audit.tickets import TicketQueue
from extauthz.decision_record import DecisionRecord
from extauthz.errors import ConfigError, DecisionLogError

if TYPE_CHECKING:
    from extauthz.config import TelemetryConfig

log = logging.getLogger("aegis.audit.writer")
BATCH = 256
MAX_BACKOFF_S = 5.0
# How long an answer waits for its record (audit.sync): below Envoy's 1 s ext_authz timeout,
# so an agent refused for it gets Aegis's reason rather than Envoy's bare 503.
SYNC_TIMEOUT_S = 0.8
WITHHELD = "decision.withheld"
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
        self._opener = opener or (lambda p: p.open("ab", buffering=0))
        self._stream = stream
        self._clock = clock
        self._retry_s = retry_s
        self._key: Ed25519PrivateKey | None = load_private(config.signing_key) if config.signing_key else None
        fingerprint = chain.key_fingerprint(self._key.public_key()) if self._key else ""
        self._key_id = config.key_id or fingerprint
        self.labels = {"app": "aegis", "id": uuid.uuid4().hex, "version": _version()}
        self._queue = TicketQueue(config.queue_size, self._blocked)
        self._head, self._seq = chain.GENESIS, 0  # hash of the last entry, seq of the next one
        self._since_checkpoint, self._last_checkpoint = 0, clock()
        self._fh: BinaryIO | None = None
        self._size, self._file_first_seq = 0, 0
        self.written = self.blocked = self.write_errors = self.checkpoints = 0
        self.last_error: str | None = None
        self._closed = False
        self._bridge: _AuditBridge | None = None
        self._forward = forward
        self._unforwarded: list[tuple[dict[str, Any], int, bytes]] = []  # sealed, not yet written
        if metrics is not None:
            metrics.decision_log_queue.set_function(self._queue.qsize)
        self._open_current()
        self._thread = threading.Thread(target=self._run, name="aegis-decision-log", daemon=True)
        self._thread.start()

    # --- the hot path -------------------------------------------------------------------

    def __call__(self, record: DecisionRecord) -> bool:
        """Log one decision: with ``sync``, True once written; False if the log is failing or
        the write took longer than ``SYNC_TIMEOUT_S`` (the caller must then refuse the call).
        Never drops the record: it stays queued and is written when the disk allows."""
        ticket = self._put(record)
        if not self._config.sync:
            return True
        if self.last_error is not None:  # failing: held and retried, not worth waiting for
            return False
        if self._queue.wait(ticket, SYNC_TIMEOUT_S, lambda: self.last_error is not None):
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
        self._put((kind, dict(fields), self._clock()))

    def _put(self, item: Any) -> int:
        if self._closed:
            raise RuntimeError("the decision log is closed")
        return self._queue.put(item)

    def _blocked(self) -> None:
        self.blocked += 1
        if self._metrics is not None:
            self._metrics.decision_log_blocked.inc()

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
        """Write what is queued, a final checkpoint, fsync; then stop the writer."""
        if self._closed:
            return
        if self._bridge is not None:
            logging.getLogger(self._bridge_logger).removeHandler(self._bridge)
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("decision log: could not finish writing", extra={"aegis": {"queued": self._queue.qsize()}})
        if self._forward is not None:  # after the final checkpoint was handed over
            self._forward.shutdown()

    def health(self) -> dict[str, Any]:
        """For /readyz: not ready while writes fail (entries are held and retried)."""
        out: dict[str, Any] = {"ok": self.last_error is None, "queued": self._queue.qsize(), "written": self.written}
        if self.last_error:
            out["error"] = self.last_error
        return out

    @property
    def head(self) -> tuple[int, str]:
        """(entries written, hash of the last one)."""
        return self._seq, self._head

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            timeout = max(0.01, self._last_checkpoint + self._config.checkpoint_seconds - self._clock())
            try:
                items = [self._queue.get(timeout)]
            except queue.Empty:
                items = []
            while len(items) < BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for _, item in items):
                stopping = True
                items = [(ticket, item) for ticket, item in items if item is not _STOP]
            lines: list[bytes] = []
            for ticket, item in items:
                lines.append(self._seal(self._to_entry(item)))
                if self._since_checkpoint >= self._config.checkpoint_every:  # exactly every N entries
                    self._write(b"".join(lines))
                    self._queue.done(ticket)
                    self._checkpoint()
                    lines = []
            if lines:
                self._write(b"".join(lines))
            if items:
                self._queue.done(items[-1][0])
            due = self._since_checkpoint and self._clock() - self._last_checkpoint >= self._config.checkpoint_seconds
            if self._fh is not None and self._size >= self._config.max_bytes:
                self._rotate()
            if due or (stopping and self._since_checkpoint):
                self._checkpoint()
            elif not self._since_checkpoint:
                self._last_checkpoint = self._clock()
        if self._fh is not None:
            self._fh.close()

    def _to_entry(self, item: Any) -> dict[str, Any]:
        try:
            if isinstance(item, DecisionRecord):
                return decision_entry(item, self.labels)
            kind, fields, timestamp = item
            return event_entry(kind, fields, timestamp, self.labels)
        except Exception:
            # A masking bug must neither stop the writer nor drop the record: keep what carries
            # no PII (ids, outcome, version) and say that the rest was left out.
            log.exception("decision log: masking failed; the entry is written without its values")
            return fallback_entry(item, self.labels)

    def _seal(self, entry: dict[str, Any]) -> bytes:
        line, self._head = chain.seal(entry, self._head, self._seq)
        if self._forward is not None:
            self._unforwarded.append((entry, self._seq, line))
        self._seq += 1
        if entry["type"] != "checkpoint":
            self._since_checkpoint += 1
        if self._metrics is not None:
            self._metrics.decision_log_entries.labels(entry["type"]).inc()
        return line + b"\n"

    def _write(self, data: bytes, *, sync: bool = False) -> None:
        """Write all of ``data``; on OSError keep the rest and retry with backoff (never drop)."""
        view, delay = memoryview(data), self._retry_s
        while True:
            try:
                while view:
                    written = self._target().write(view)
                    view = view[written or 0 :]
                self._target().flush()
                if sync and self._fh is not None:
                    os.fsync(self._fh.fileno())
                break
            except OSError as exc:
                self.write_errors += 1
                self.last_error = f"write failed: {errno.errorcode.get(exc.errno or 0, 'EIO')}"
                if self._metrics is not None:
                    self._metrics.decision_log_write_errors.inc()
                self._queue.wake()  # waiting callers give up now (their calls are refused)
                log.error("decision log write failed; retrying", extra={"aegis": {"errno": exc.errno}})
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        self.last_error = None
        self._size += len(data)
        self.written = self._seq
        if self._unforwarded:
            self._forward_written()

    def _forward_written(self) -> None:
        """Hand the entries just written to the forwarder (every write carries all sealed ones)."""
        pending, self._unforwarded = self._unforwarded, []
        if self._forward is None:
            return
        try:
            for entry, seq, line in pending:
                self._forward.emit(entry, seq, line)
        except Exception:  # forwarding is best effort; the file is the record
            log.exception("decision log: forwarding failed")

    def _target(self) -> BinaryIO:
        if self._stream is not None:
            return self._stream
        if self._fh is None:
            self._fh = self._opener(self._path)
        return self._fh

    def _checkpoint(self) -> None:
        entry = chain.checkpoint_entry(self._head, self._seq, self._key_id, self._key, rfc3339(self._clock()))
        self._write(self._seal(entry), sync=True)
        self._since_checkpoint, self._last_checkpoint = 0, self._clock()
        self.checkpoints += 1
        if self._metrics is not None:
            self._metrics.decision_log_checkpoints.inc()

    # --- files ----------------------------------------------------------------------------

    @property
    def _path(self) -> Path:
        if self._config.path is None:
            raise ConfigError("audit.path is not set")
        return self._config.path

    def _open_current(self) -> None:
        """Continue the chain of an existing file, or start a new one with a header."""
        if self._config.stdout:
            if self._stream is None:
                self._stream = sys.stdout.buffer
            self._write(self._seal(self._header()))
            return
        path = self._path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
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
        self._start_file()

    def _header(self) -> dict[str, Any]:
        return {
            "type": "header",
            "format": chain.FORMAT_VERSION,
            "timestamp": rfc3339(self._clock()),
            "labels": self.labels,
        }

    def _start_file(self) -> None:
        self._size, self._file_first_seq = 0, self._seq
        self._write(self._seal(self._header()))

    def _rotate(self) -> None:
        if self._since_checkpoint:
            self._checkpoint()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        path = self._path
        with contextlib.suppress(FileNotFoundError):
            path.rename(rotated_name(path, self._file_first_seq))
        self._start_file()


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
