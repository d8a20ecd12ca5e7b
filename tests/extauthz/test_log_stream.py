"""The service's buffered log output (``extauthz.log_stream``)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extauthz.log_stream import BufferedLogHandler, log_info
from extauthz.server import JsonLogFormatter

INTERVAL_S = 0.05


@pytest.fixture()
def logged(tmp_path: Path) -> Iterator[tuple[logging.Logger, BufferedLogHandler, Path]]:
    path = tmp_path / "aegis.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    handler = BufferedLogHandler(fd, interval_s=INTERVAL_S)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger(f"aegis.test.{tmp_path.name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger, handler, path
    finally:
        logger.removeHandler(handler)
        handler.close()
        os.close(fd)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _wait_for_lines(path: Path, count: int, timeout_s: float = 5.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = _lines(path)
        if len(lines) >= count:
            return lines
        time.sleep(INTERVAL_S / 5)
    return _lines(path)


def test_info_lines_wait_in_the_buffer_then_the_timer_flushes_them(
    logged: tuple[logging.Logger, BufferedLogHandler, Path],
) -> None:
    logger, handler, path = logged
    with handler.lock:  # type: ignore[union-attr]  # the flusher cannot run while we hold it
        logger.info("decision", extra={"aegis": {"decision": "allow"}})
        logger.info("decision", extra={"aegis": {"decision": "deny"}})
        assert path.read_text(encoding="utf-8") == ""  # no write(2) per line
    lines = _wait_for_lines(path, 2)
    assert [line["decision"] for line in lines] == ["allow", "deny"]


def test_warnings_are_written_at_once_with_what_was_buffered_before(
    logged: tuple[logging.Logger, BufferedLogHandler, Path],
) -> None:
    logger, handler, path = logged
    with handler.lock:  # type: ignore[union-attr]
        logger.info("decision", extra={"aegis": {"decision": "allow"}})
        logger.warning("policy rejected")
        assert [line["msg"] for line in _lines(path)] == ["decision", "policy rejected"]


def test_close_flushes_what_is_left_and_later_lines_are_written_at_once(
    logged: tuple[logging.Logger, BufferedLogHandler, Path],
) -> None:
    logger, handler, path = logged
    with handler.lock:  # type: ignore[union-attr]
        logger.info("last words")
    handler.close()  # what logging.config.dictConfig does to every handler, e.g. in a library
    assert [line["msg"] for line in _lines(path)] == ["last words"]
    with handler.lock:  # type: ignore[union-attr]
        logger.info("after close")
        assert [line["msg"] for line in _lines(path)] == ["last words", "after close"]


def test_the_http_server_leaves_the_service_logging_alone() -> None:
    from extauthz.server import http_server_config

    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    closed: list[bool] = []
    handler.close = lambda: closed.append(True)  # type: ignore[method-assign]
    try:
        http_server_config(object(), "127.0.0.1", 0).configure_logging()
        assert not closed and handler in root.handlers
    finally:
        root.removeHandler(handler)


def test_a_service_process_that_exits_loses_no_line(tmp_path: Path) -> None:
    # configure_logging as `aegis serve` runs it; the interpreter's exit flushes (logging.shutdown).
    script = (
        "import logging\n"
        "from extauthz.server import configure_logging\n"
        "configure_logging()\n"
        "log = logging.getLogger('aegis.decision')\n"
        "for i in range(500):\n"
        "    log.info('decision', extra={'aegis': {'n': i}})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["n"] for line in lines] == list(range(500))


def test_configure_logging_falls_back_when_stderr_has_no_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from extauthz.server import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    for switch in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, switch, getattr(logging, switch))  # restored afterwards
    try:
        configure_logging()
        (handler,) = root.handlers
        assert type(handler) is logging.StreamHandler
        logging.getLogger("aegis.decision").info("decision")
        assert json.loads(sys.stderr.getvalue())["msg"] == "decision"
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


DECISION = {"decision": "allow", "rule": "refund-auto-approved", "decision_id": "ab" * 16, "error": None}


def test_a_decision_line_written_directly_is_the_line_logging_writes(
    logged: tuple[logging.Logger, BufferedLogHandler, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler, path = logged
    monkeypatch.setattr(logger, "handlers", [handler])  # the service's set-up (without pytest's capture)
    logger.info("decision", extra={"aegis": DECISION})
    with monkeypatch.context() as patched:  # no LogRecord, no handlers walked
        patched.setattr(logger, "handle", lambda record: pytest.fail("went through logging"))
        log_info(logger, "decision", DECISION)
    handler.flush()
    through_logging, direct = _lines(path)
    assert float(through_logging.pop("ts")) <= float(direct.pop("ts"))
    assert direct == through_logging == {"level": "info", "logger": logger.name, "msg": "decision", **DECISION}


def test_any_other_logging_set_up_gets_the_record(logged: tuple[logging.Logger, BufferedLogHandler, Path]) -> None:
    logger, handler, path = logged
    seen: list[logging.LogRecord] = []
    also = logging.Handler()
    also.emit = seen.append  # type: ignore[assignment]
    logger.addHandler(also)  # a second handler: both get the line
    log_info(logger, "decision", DECISION)
    logger.removeHandler(also)
    secret = logging.Filter("nothing.matches")  # a filter that drops every record: honoured
    logger.addFilter(secret)
    log_info(logger, "decision", {"n": 2})
    logger.removeFilter(secret)
    logger.setLevel(logging.WARNING)  # below the level: nothing, either way
    log_info(logger, "decision", {"n": 3})
    handler.flush()
    assert [record.aegis for record in seen] == [DECISION]  # type: ignore[attr-defined]
    assert [line["decision_id"] for line in _lines(path)] == [DECISION["decision_id"]]
