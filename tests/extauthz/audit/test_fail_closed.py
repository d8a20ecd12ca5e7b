"""The decision log blocks, never drops: no answer without its record (``audit.sync``),
and every call refused (503 decision_log_unavailable) while the log cannot be written.

In process, with a file whose writes fail with ENOSPC on demand; ``tests/e2e/test_faults.py``
proves the same through Envoy on a real full tmpfs and with a SIGKILLed service.
"""

from __future__ import annotations

import errno
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_record

from extauthz.audit import writer
from extauthz.audit.keys import load_public
from extauthz.audit.settings import AuditConfig
from extauthz.audit.verify import verify_files
from extauthz.audit.writer import DecisionLog
from extauthz.authorizer import Authorizer
from extauthz.config import load_config
from extauthz.devtokens import mint_token
from extauthz.errors import DecisionLogError
from extauthz.server import Service, build_service
from extauthz.tools import HttpRequest


class Disk(io.RawIOBase):
    """A log file whose writes fail with ENOSPC while ``full`` is set, or stall while ``stall`` is."""

    def __init__(self, path: Path) -> None:
        self.real = path.open("ab", buffering=0)
        self.full = False
        self.stall = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        while self.stall.is_set():
            time.sleep(0.01)
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(self.real.write(data))

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()
        super().close()


@pytest.fixture
def disk_log(tmp_path: Path, signing_key: tuple[Path, Path]) -> Iterator[tuple[DecisionLog, list[Disk]]]:
    disks: list[Disk] = []

    def opener(path: Path) -> Any:
        disks.append(Disk(path))
        return disks[-1]

    config = AuditConfig(path=tmp_path / "decisions.jsonl", signing_key=signing_key[0], checkpoint_every=50)
    log = DecisionLog(config, opener=opener, retry_s=0.01)
    yield log, disks
    for disk in disks:
        disk.full = False
        disk.stall.clear()
    log.close(timeout=5)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wait(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sync_returns_only_once_the_record_is_in_the_file(
    disk_log: tuple[DecisionLog, list[Disk]], tmp_path: Path
) -> None:
    log, _ = disk_log
    for n in range(20):
        assert log(make_record(n)) is True
        ids = [e.get("decision_id") for e in _lines(tmp_path / "decisions.jsonl")]
        assert ids[-1] == f"d{n:04d}"  # already written when the call returned: a kill loses nothing


def test_queued_mode_returns_before_the_write(tmp_path: Path, signing_key: tuple[Path, Path]) -> None:
    log = DecisionLog(AuditConfig(path=tmp_path / "d.jsonl", signing_key=signing_key[0], sync=False))
    try:
        assert all(log(make_record(n)) is True for n in range(50))
    finally:
        log.close()
    assert sum(e["type"] == "decision" for e in _lines(tmp_path / "d.jsonl")) == 50


def test_disk_full_refuses_new_calls_and_loses_nothing(
    disk_log: tuple[DecisionLog, list[Disk]], tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    log, disks = disk_log
    assert log(make_record(0)) is True
    log.check_writable()  # healthy: no error
    disks[-1].full = True
    assert log(make_record(1)) is False  # not written in time: the caller refuses the call
    with pytest.raises(DecisionLogError, match="cannot be written .*ENOSPC"):
        log.check_writable()
    assert log.health()["ok"] is False
    assert [log(make_record(n)) for n in range(2, 6)] == [False] * 4  # failing: no wait, held
    disks[-1].full = False
    _wait(lambda: log.health()["ok"])
    log.check_writable()
    assert log(make_record(6)) is True
    log.close()
    entries = _lines(tmp_path / "decisions.jsonl")
    assert [e["decision_id"] for e in entries if e["type"] == "decision"] == [f"d{n:04d}" for n in range(7)]
    withheld = [e["fields"]["decision_id"] for e in entries if e.get("kind") == writer.WITHHELD]
    assert withheld == ["d0001"]  # the one that was waited for and not written in time
    assert verify_files([tmp_path / "decisions.jsonl"], [load_public(signing_key[1])]).ok


def test_a_stalled_writer_fails_the_call_closed_and_says_so(
    disk_log: tuple[DecisionLog, list[Disk]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, disks = disk_log
    assert log(make_record(0)) is True
    monkeypatch.setattr(writer, "SYNC_TIMEOUT_S", 0.05)
    disks[-1].stall.set()
    assert log(make_record(1)) is False
    disks[-1].stall.clear()
    log.close()
    entries = _lines(tmp_path / "decisions.jsonl")
    assert [e["decision_id"] for e in entries if e["type"] == "decision"] == ["d0000", "d0001"]
    assert [e["fields"] for e in entries if e.get("kind") == writer.WITHHELD] == [
        {"decision_id": "d0001", "answer": 503, "error": "decision_log_unavailable"}
    ]


# --- through the Authorizer -----------------------------------------------------------------


@pytest.fixture
def service(config_path: Path) -> Iterator[Service]:
    svc = build_service(load_config(config_path))
    yield svc
    svc.close()


def _refund(service: Service, amount: float) -> HttpRequest:
    token = mint_token(service.config.identity, agent="support-bot", tenant="acme", scopes=["payments.refund"])
    body = json.dumps({"amount": amount, "currency": "USD"}).encode()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    return HttpRequest("POST", "payments.demo", "/v1/refunds", "", headers, body)


def test_authorizer_refuses_while_the_log_fails_before_any_side_effect(
    service: Service, disk_log: tuple[DecisionLog, list[Disk]], tmp_path: Path
) -> None:
    log, disks = disk_log
    base = service.authorizer
    authorizer = Authorizer(
        service.verifier,
        service.store,
        policy=base.policy,
        base_url="http://aegis.test",
        max_body_bytes=65536,
        approvals=base.approvals,
        sink=log,
        log_gate=log.check_writable,
    )
    assert authorizer.check(_refund(service, 20)).status == 200
    disks[-1].full = True
    first = authorizer.check(_refund(service, 20))  # decided allow, but its record was not written
    assert first.status == 503 and first.body["error"] == "decision_log_unavailable"
    _wait(lambda: not log.health()["ok"])
    refused = authorizer.check(_refund(service, 120))  # would need an approval
    assert refused.status == 503 and refused.body["error"] == "decision_log_unavailable"
    assert "cannot be written" in refused.body["message"]
    assert service.store.list_approvals() == []  # refused before the approval was created
    disks[-1].full = False
    _wait(lambda: log.health()["ok"])
    assert authorizer.check(_refund(service, 120)).status == 202
    log.close()
    decisions = [e for e in _lines(tmp_path / "decisions.jsonl") if e["type"] == "decision"]
    assert [(e["status"], e["error"]) for e in decisions] == [
        (200, None),
        (200, None),  # the policy's decision, then the event saying the answer was withheld
        (503, "decision_log_unavailable"),
        (202, None),
    ]


def test_a_masking_bug_neither_stops_the_writer_nor_drops_the_record(
    disk_log: tuple[DecisionLog, list[Disk]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = disk_log

    def broken(record: Any, labels: Any) -> dict[str, Any]:
        raise TypeError("a dlp bug")

    monkeypatch.setattr(writer, "decision_entry", broken)
    assert log(make_record(1)) is True
    monkeypatch.undo()
    assert log(make_record(2)) is True
    log.close()
    first, second = [e for e in _lines(tmp_path / "decisions.jsonl") if e["type"] == "decision"]
    assert first["masking_failed"] is True and first["decision_id"] == "d0001" and "input" not in first
    assert "jane.doe" not in json.dumps(first)  # nothing unmasked stands in for the masked values
    assert second["decision_id"] == "d0002" and "masking_failed" not in second
