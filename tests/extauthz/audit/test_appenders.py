"""Both decision-log appenders (``extauthz.audit.appender``) keep one contract: bytes in ticket
order, nothing dropped while the file cannot take them, waiters released on failure or
timeout.  The file faults are real: a FIFO nobody reads stalls writes once its buffer is
full, ``/dev/full`` fails them with ENOSPC."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz.audit import writer
from extauthz.audit.appender import Appender, ThreadAppender, open_appender
from extauthz.audit.keys import load_public
from extauthz.audit.settings import AuditConfig
from extauthz.audit.verify import verify_files
from extauthz.audit.writer import DecisionLog
from tests.extauthz.audit.conftest import make_record

aegis_grpc_front = pytest.importorskip("aegis_grpc_front", reason="the compiled front (make install) is not built")

KINDS = ["native", "python"]
REPO = Path(__file__).resolve().parents[3]
PIPE_BUFFER = 1 << 16  # Linux's default pipe capacity


def make_appender(kind: str, path: Path, capacity: int = 100) -> Appender:
    if kind == "native":
        appender: Appender = aegis_grpc_front.FileAppender(str(path), 0.01, capacity)
    else:
        appender = ThreadAppender(path, retry_s=0.01, capacity=capacity)
    return appender


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A FIFO with a reader that reads only when told: writes stall once its buffer is full."""
    path = tmp_path / "stalled.jsonl"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, reader
    os.close(reader)


def drain(reader: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(reader, PIPE_BUFFER)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_the_compiled_appender_is_the_default_for_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_appender(tmp_path / "a.jsonl"), aegis_grpc_front.FileAppender)
    monkeypatch.setenv("AEGIS_AUDIT_APPENDER", "python")
    assert isinstance(open_appender(tmp_path / "b.jsonl"), ThreadAppender)


@pytest.mark.parametrize("kind", KINDS)
def test_bytes_are_written_in_ticket_order(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    appender = make_appender(kind, path)
    chunks = [f"line {n}\n".encode() for n in range(500)]
    tickets = [appender.append(chunk, n % 50 == 0, True) for n, chunk in enumerate(chunks)]
    assert tickets == list(range(1, 501))
    assert appender.wait(500, 5.0) is True
    assert path.read_bytes() == b"".join(chunks)
    assert appender.state() == (500, 0, None, 0)
    assert appender.close(5.0) is True


@pytest.mark.parametrize("kind", KINDS)
def test_rotation_renames_after_what_was_queued(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    appender = make_appender(kind, path)
    appender.append(b"first\n", True, True)
    ticket = appender.rotate(tmp_path / "log.000.jsonl", b"header\n", True)
    appender.append(b"second\n", False, True)
    assert ticket == 2 and appender.close(5.0) is True
    assert (tmp_path / "log.000.jsonl").read_bytes() == b"first\n"
    assert path.read_bytes() == b"header\nsecond\n"


@pytest.mark.parametrize("kind", KINDS)
def test_a_stalled_file_releases_waiters_at_their_timeout_and_loses_nothing(kind: str, fifo: tuple[Path, int]) -> None:
    path, reader = fifo
    appender = make_appender(kind, path, capacity=3)
    big = b"x" * (PIPE_BUFFER + 1) + b"\n"  # more than the FIFO holds: the write stalls
    first = appender.append(big, False, True)
    started = time.monotonic()
    assert appender.wait(first, 0.2) is False
    assert 0.15 < time.monotonic() - started < 2.0
    # The writer is stuck in write(): the queue fills, and a caller that must not wait hears so.
    queued = [appender.append(f"{n}\n".encode(), False, True) for n in range(3)]
    assert appender.append(b"more\n", False, False) is None
    assert appender.state()[2] is None  # stalled is not failing: no errno to report
    received = b""
    deadline = time.monotonic() + 10
    while not appender.wait(queued[-1], 0.05):
        received += drain(reader)
        assert time.monotonic() < deadline
    received += drain(reader)
    assert received == big + b"0\n1\n2\n"
    assert appender.close(5.0) is True


@pytest.mark.parametrize("kind", KINDS)
def test_close_does_not_hang_on_a_stalled_file_with_a_full_queue(kind: str, fifo: tuple[Path, int]) -> None:
    path, reader = fifo
    appender = make_appender(kind, path, capacity=2)
    appender.append(b"x" * (PIPE_BUFFER + 1), False, True)
    time.sleep(0.1)  # the writer takes it and blocks in write()
    appender.append(b"a\n", False, True)
    appender.append(b"b\n", False, True)
    started = time.monotonic()
    assert appender.close(0.2) is False  # it cannot finish, and says so at its timeout
    assert time.monotonic() - started < 2.0
    with pytest.raises(RuntimeError, match="closed"):
        appender.append(b"late\n", False, True)
    drain(reader)  # unblock the writer so its thread ends


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_fails_waiters_at_once_and_reports_enospc(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "full.jsonl"
    path.symlink_to("/dev/full")
    appender = make_appender(kind, path)
    ticket = appender.append(b"record\n", True, True)
    started = time.monotonic()
    assert appender.wait(ticket, 5.0) is False
    assert time.monotonic() - started < 2.0  # released by the failure, not by the timeout
    written, errors, failing, queued = appender.wait_progress(0, 1, 2.0)  # a retry fails too
    assert (written, failing, queued) == (0, errno.ENOSPC, 0) and errors >= 2
    assert appender.close(0.2) is False  # the bytes are kept and retried, so it cannot finish


# --- the decision log on the compiled appender, against real file faults ---------------------


@pytest.fixture
def native_log(
    fifo: tuple[Path, int], signing_key: tuple[Path, Path]
) -> Iterator[Callable[..., tuple[DecisionLog, Callable[[], bytes]]]]:
    opened: list[DecisionLog] = []
    path, reader = fifo
    received = bytearray()

    def read() -> bytes:
        received.extend(drain(reader))
        return bytes(received)

    def factory(**settings: Any) -> tuple[DecisionLog, Callable[[], bytes]]:
        log = DecisionLog(AuditConfig(path=path, signing_key=signing_key[0], **settings))
        opened.append(log)
        return log, read

    yield factory
    stop = threading.Event()
    draining = threading.Thread(target=lambda: [read() or time.sleep(0.01) for _ in iter(stop.is_set, True)])
    draining.start()
    for log in opened:
        log.close(timeout=5)
    stop.set()
    draining.join(5)


def test_a_stalled_disk_fails_the_call_closed_on_the_compiled_appender(
    native_log: Callable[..., tuple[DecisionLog, Callable[[], bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, read = native_log()
    assert isinstance(log._appender, aegis_grpc_front.FileAppender)
    monkeypatch.setattr(writer, "SYNC_TIMEOUT_S", 0.1)
    stalled = 0
    while log(make_record(stalled)) is True:  # written until the FIFO's buffer is full
        stalled += 1
        assert stalled < 1000, "the FIFO never filled"
    assert stalled > 0
    read()  # the disk moves again
    monkeypatch.setattr(writer, "SYNC_TIMEOUT_S", 5.0)
    assert log(make_record(5000)) is True
    lines = [json.loads(line) for line in read().splitlines()]
    decisions = [e["decision_id"] for e in lines if e["type"] == "decision"]
    assert decisions == [f"d{n:04d}" for n in (*range(stalled + 1), 5000)]  # every record, in order
    withheld = [e["fields"] for e in lines if e.get("kind") == writer.WITHHELD]
    assert withheld == [{"decision_id": f"d{stalled:04d}", "answer": 503, "error": "decision_log_unavailable"}]
    # The final checkpoint: fsync is refused on a FIFO (EINVAL), which is no write failure.
    started = time.monotonic()
    log.close(timeout=5)
    assert time.monotonic() - started < 2.0 and log.health()["ok"] is True
    assert json.loads(read().splitlines()[-1])["type"] == "checkpoint"


def _times_scheduled(thread: threading.Thread) -> int:
    """How often the kernel ran ``thread`` (``schedstat``'s third field)."""
    return int(Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text().split()[2])


@pytest.mark.parametrize("kind", KINDS)
def test_a_synchronous_decision_wakes_no_other_thread_than_the_appender(
    kind: str, tmp_path: Path, signing_key: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The housekeeping thread sleeps through writes (it wakes for errors, its timer and
    forwarding): woken by each, it would cost every synchronous decision a thread wake-up."""
    if kind == "python":
        monkeypatch.setenv("AEGIS_AUDIT_APPENDER", "python")
    log = DecisionLog(AuditConfig(path=tmp_path / "d.jsonl", signing_key=signing_key[0], checkpoint_every=1000))
    housekeeping = log._threads[0]
    try:
        log(make_record(0))
        time.sleep(0.05)
        before, started = _times_scheduled(housekeeping), time.monotonic()
        for n in range(1, 301):
            assert log(make_record(n)) is True
        woken = _times_scheduled(housekeeping) - before
        assert woken <= (time.monotonic() - started) / writer.HOUSEKEEPING_S + 2
    finally:
        log.close()
    result = verify_files([tmp_path / "d.jsonl"], [load_public(signing_key[1])])
    assert result.ok and result.entries == 303  # the header, 301 decisions, the final checkpoint


def test_standard_output_on_the_compiled_appender(tmp_path: Path, signing_key: tuple[Path, Path]) -> None:
    """``audit.stdout`` without a stream given: the compiled appender writes to fd 1."""
    script = (
        "import sys; from pathlib import Path\n"
        "from extauthz.audit.settings import AuditConfig\n"
        "from extauthz.audit.writer import DecisionLog\n"
        "from tests.extauthz.audit.conftest import make_record\n"
        "log = DecisionLog(AuditConfig(stdout=True, signing_key=Path(sys.argv[1])))\n"
        "assert type(log._appender).__name__ == 'FileAppender'\n"
        "for n in range(3): assert log(make_record(n))\n"
        "log.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(signing_key[0])], capture_output=True, check=True, cwd=REPO, timeout=60
    )
    target = tmp_path / "stdout.jsonl"
    target.write_bytes(done.stdout)
    kinds = [json.loads(line)["type"] for line in done.stdout.splitlines()]
    assert kinds == ["header", "decision", "decision", "decision", "checkpoint"]
    assert verify_files([target], [load_public(signing_key[1])]).ok
