"""The decision log: masking, chain, checkpoints, rotation, restart, write failures, throughput."""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import SECRETS, make_record

from extauthz.audit.keys import load_public
from extauthz.audit.verify import verify_files
from extauthz.audit.writer import DecisionLog
from extauthz.decision import Effect
from extauthz.telemetry import Metrics


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_entry_has_the_opa_shape_and_aegis_fields(open_log: Callable[..., DecisionLog], tmp_path: Path) -> None:
    log = open_log()
    log(make_record(1, effect=Effect.DENY, shadow=True))
    log.close()
    header, entry, checkpoint = _lines(tmp_path / "decisions.jsonl")
    assert header["type"] == "header" and checkpoint["type"] == "checkpoint"
    assert entry["decision_id"] == "d0001"
    assert entry["path"] == "aegis/decision"
    assert entry["labels"]["app"] == "aegis" and entry["labels"]["id"] and entry["labels"]["version"]
    assert entry["bundles"] == {"aegis": {"revision": "abc123"}}
    assert entry["timestamp"].endswith("Z") and "T" in entry["timestamp"]
    assert entry["input"]["agent"]["id"] == "support-bot"
    assert entry["input"]["request"] == {"method": "POST", "host": "payments.demo", "path": "/v1/refunds"}
    assert entry["result"]["effect"] == "deny"
    assert entry["result"]["reasons"] == [{"rule": "rule-x", "message": "reason 1"}]
    assert entry["result"]["shadow"][0]["rule"] == "shadow-rule"
    assert entry["would_deny"] is True and entry["would_sanitize"] is False
    assert (entry["agent"], entry["tenant"], entry["tool"]) == ("support-bot", "acme", "payments.refund")
    assert (entry["effect"], entry["outcome"], entry["status"], entry["rule"]) == ("deny", "deny", 403, "rule-x")
    assert entry["api"] == "ext_authz" and entry["error"] is None
    assert entry["prev_hash"] == header["hash"] and entry["seq"] == 1


def test_pii_and_secrets_are_masked(open_log: Callable[..., DecisionLog], tmp_path: Path) -> None:
    log = open_log()
    log(make_record(1, shadow=True))
    log.close()
    text = (tmp_path / "decisions.jsonl").read_text()
    for secret in SECRETS:
        assert secret not in text
    entry = _lines(tmp_path / "decisions.jsonl")[1]
    args = entry["input"]["tool"]["args"]
    assert args["amount"] == 120  # not PII: kept as a number
    assert args["email"] == "[REDACTED:EMAIL]"
    assert args["card"] == "[REDACTED:CREDIT_CARD]"
    assert "/input/tool/args/email" in entry["masked"]
    assert "/input/tool/args/customer/full_name" in entry["masked"]


def test_events_are_chained_and_masked(open_log: Callable[..., DecisionLog], tmp_path: Path) -> None:
    import logging

    log = open_log()
    log.attach_logger("aegis.audit.test")
    logging.getLogger("aegis.audit.test").info(
        "approval.approved",
        extra={"aegis": {"event": "approval.approved", "approval_id": "apr_1", "by": "jane.doe@example.com"}},
    )
    log.event("approval.expired", {"approval_id": "apr_2"})
    log.close()
    events = [e for e in _lines(tmp_path / "decisions.jsonl") if e["type"] == "event"]
    assert [e["kind"] for e in events] == ["approval.approved", "approval.expired"]
    assert events[0]["fields"] == {"approval_id": "apr_1", "by": "[REDACTED:EMAIL]"}


def test_checkpoints_every_n_entries_and_at_close(
    open_log: Callable[..., DecisionLog], tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    log = open_log(checkpoint_every=10, key_id="k1")
    for n in range(25):
        log(make_record(n, args={"amount": n}))
    log.close()
    entries = _lines(tmp_path / "decisions.jsonl")
    checkpoints = [e for e in entries if e["type"] == "checkpoint"]
    assert len(checkpoints) >= 3 and entries[-1]["type"] == "checkpoint"
    assert all(c["key_id"] == "k1" for c in checkpoints)
    result = verify_files([tmp_path / "decisions.jsonl"], [load_public(signing_key[1])])
    assert result.ok, result.problems
    assert result.entries == len(entries)


def test_checkpoint_every_t_seconds(open_log: Callable[..., DecisionLog], tmp_path: Path) -> None:
    log = open_log(checkpoint_seconds=0.2)
    log(make_record(1))
    deadline = time.monotonic() + 5
    # Counted when sealed; on disk once the appender has written it.
    while _lines(tmp_path / "decisions.jsonl")[-1]["type"] != "checkpoint" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.checkpoints == 1
    assert _lines(tmp_path / "decisions.jsonl")[-1]["type"] == "checkpoint"


def test_rotation_continues_the_chain_across_files(
    open_log: Callable[..., DecisionLog], tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    log = open_log(max_bytes=4000)
    for n in range(40):
        log(make_record(n))
        if n % 7 == 0:
            time.sleep(0.01)  # several batches
    log.close()
    files = sorted(tmp_path.glob("decisions*.jsonl"))
    assert len(files) > 2
    for path in files:
        assert _lines(path)[0]["type"] == "header"
    rotated = [p for p in files if p.name != "decisions.jsonl"]
    second = _lines(rotated[1])[0]
    assert second["prev_hash"] == _lines(rotated[0])[-1]["hash"]
    key = load_public(signing_key[1])
    result = verify_files(list(reversed(files)), [key])  # any order: sorted by first seq
    assert result.ok, result.problems
    missing = verify_files([p for p in files if p != rotated[1]], [key])
    assert not missing.ok and "chain broken" in (missing.first_problem or "")


def test_restart_continues_the_chain(
    open_log: Callable[..., DecisionLog], tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    first = open_log()
    first(make_record(1))
    first.close()
    second = open_log()
    second(make_record(2))
    second.close()
    result = verify_files([tmp_path / "decisions.jsonl"], [load_public(signing_key[1])])
    assert result.ok, result.problems
    assert [e["type"] for e in _lines(tmp_path / "decisions.jsonl")] == [
        "header",
        "decision",
        "checkpoint",
        "decision",
        "checkpoint",
    ]


def test_key_rotation_new_key_id_verifies_with_both_keys(
    open_log: Callable[..., DecisionLog], tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    from extauthz.audit.keys import generate

    old = open_log(key_id="2025-01")
    old(make_record(1))
    old.close()
    new_private = tmp_path / "keys" / "audit2.pem"
    new_public, _ = generate(new_private)
    new = open_log(key_id="2025-02", signing_key=new_private)
    new(make_record(2))
    new.close()
    path = tmp_path / "decisions.jsonl"
    both = verify_files([path], [load_public(signing_key[1]), load_public(new_public)])
    assert both.ok and both.key_ids == ["2025-01", "2025-02"]
    only_old = verify_files([path], [load_public(signing_key[1])])
    assert not only_old.ok and "unknown key" in (only_old.first_problem or "")


class FlakyFile(io.RawIOBase):
    """A file whose writes fail with ENOSPC while ``full`` is set (after writing part of the data)."""

    def __init__(self, path: Path) -> None:
        self.real = path.open("ab", buffering=0)
        self.full = False
        self.failures = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.full:
            self.failures += 1
            partial = bytes(data)[:7]
            if self.failures == 1 and partial:
                return int(self.real.write(partial))  # a short write first, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(self.real.write(data))

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()
        super().close()


def test_write_failure_holds_entries_and_loses_nothing(
    open_log: Callable[..., DecisionLog], tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    files: list[FlakyFile] = []

    def opener(path: Path) -> Any:
        files.append(FlakyFile(path))
        return files[-1]

    metrics = Metrics()
    log = open_log(opener=opener, metrics=metrics, retry_s=0.01, queue_size=5)
    log(make_record(0))
    deadline = time.monotonic() + 5
    while log.written < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    files[-1].full = True
    for n in range(1, 4):
        log(make_record(n))
    deadline = time.monotonic() + 5
    while log.write_errors < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.health()["ok"] is False and "ENOSPC" in log.health()["error"]
    assert metrics.registry.get_sample_value("aegis_decision_log_write_errors_total") >= 3
    # the hot path keeps enqueueing; past the queue bound it waits (counted), never drops
    import threading

    producer = threading.Thread(target=lambda: [log(make_record(n)) for n in range(4, 20)])
    producer.start()
    deadline = time.monotonic() + 5
    while log.blocked == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.blocked >= 1
    files[-1].full = False  # space again
    producer.join(10)
    log.close()
    assert log.health()["ok"] is True
    entries = _lines(tmp_path / "decisions.jsonl")
    assert sorted(e["decision_id"] for e in entries if e["type"] == "decision") == [f"d{n:04d}" for n in range(20)]
    assert verify_files([tmp_path / "decisions.jsonl"], [load_public(signing_key[1])]).ok
    assert metrics.registry.get_sample_value("aegis_decision_log_blocked_total") >= 1


def test_stdout_delivery(tmp_path: Path) -> None:
    from extauthz.audit.settings import AuditConfig

    out = io.BytesIO()
    log = DecisionLog(AuditConfig(stdout=True), stream=out)
    log(make_record(1))
    log.close()
    lines = out.getvalue().decode().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["header", "decision", "checkpoint"]
    target = tmp_path / "stdout.jsonl"
    target.write_bytes(out.getvalue())
    assert verify_files([target], [], allow_unsigned_tail=False).problems == []


def test_hot_path_cost_and_writer_throughput(open_log: Callable[..., DecisionLog], tmp_path: Path) -> None:
    """Numbers for docs/telemetry.md (generous bounds: a shared CI machine); the queued hot
    path (``sync: false``), the writer's throughput behind it."""
    log = open_log(queue_size=20_000, checkpoint_every=1000, sync=False)
    records = [make_record(n) for n in range(2000)]
    started = time.perf_counter()
    for record in records:
        log(record)
    enqueue_us = (time.perf_counter() - started) / len(records) * 1e6
    log.close()
    elapsed = time.perf_counter() - started
    print(f"\nenqueue {enqueue_us:.2f} us/record; writer {len(records) / elapsed:.0f} records/s (PII-heavy args)")
    assert enqueue_us < 200
    assert len(_lines(tmp_path / "decisions.jsonl")) >= 2000


def test_masked_texts_are_reused_within_a_day_and_judged_again_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reason texts and paths repeat, so their masking is cached; by the day, because whether a
    date is a date of birth depends on it (never after today)."""
    from dlp import _dates
    from extauthz.audit.entry import _masked_text, mask_text

    future = dt.date.today() + dt.timedelta(days=13)
    text = f"date of birth: {future.isoformat()} (refund for jane.roe@example.com)"
    today = mask_text(text)
    assert today == f"date of birth: {future.isoformat()} (refund for [REDACTED:EMAIL])"
    hits = _masked_text.cache_info().hits
    assert mask_text(text) == today and _masked_text.cache_info().hits == hits + 1
    monkeypatch.setattr(_dates, "_current_date", lambda: future + dt.timedelta(days=1))
    assert mask_text(text) == "date of birth: [REDACTED:DATE_OF_BIRTH] (refund for [REDACTED:EMAIL])"


def test_long_numbers_are_scanned_as_text_and_logged_as_numbers() -> None:
    """A card number sent as a JSON number is masked; a long number that is no PII stays the
    number it was, whether or not something else in the arguments was masked."""
    from extauthz.audit.entry import mask_args

    assert mask_args({"order_id": 12345678, "amount": 20}) == ({"order_id": 12345678, "amount": 20}, [])
    masked, pointers = mask_args({"card": 4111111111111111, "order_id": 12345678, "items": [{"qty": 10_000_000}]})
    assert masked == {"card": "[REDACTED:CREDIT_CARD]", "order_id": 12345678, "items": [{"qty": 10_000_000}]}
    assert pointers == ["/input/tool/args/card"]
