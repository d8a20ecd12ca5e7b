"""bench.soak's bookkeeping: decision-log counting across files, the summary, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.soak import LogCounter, parse_args, soak_policy_dir, summarize, table
from bench.stack import POLICIES
from extauthz.cli import main as aegis


def _line(kind: str, n: int) -> bytes:
    return json.dumps({"type": kind, "seq": n}).encode() + b"\n"


def test_log_counter_reads_only_new_complete_lines_across_rotated_files(tmp_path: Path) -> None:
    current = tmp_path / "decisions.jsonl"
    current.write_bytes(_line("header", 0) + _line("decision", 1) + _line("decision", 2) + b'{"type":"deci')
    counter = LogCounter(tmp_path)
    assert counter.update() == 2  # the torn tail is not counted yet
    with current.open("ab") as fh:
        fh.write(b'sion","seq":3}\n' + _line("checkpoint", 4))
    (tmp_path / "decisions.000000000005.jsonl").write_bytes(_line("header", 5) + _line("decision", 6))
    assert counter.update() == 4
    assert counter.update() == 4  # nothing new


def _row(minute: int, rss: float, lost: int = 0, fivexx: int = 0) -> dict:
    statuses = {200: 10, 202: 5, 403: 5}
    return {
        "minute": minute,
        "sent": 20,
        "answered": 20,
        "statuses": statuses,
        "5xx": fivexx,
        "transport_errors": 0,
        "logged": 20 - lost,
        "lost": lost,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "rss_service_mb": rss,
        "rss_envoy_mb": 50.0,
    }


def test_summary_flags_lost_entries_5xx_and_memory_growth() -> None:
    flat = summarize([_row(1, 100.0), _row(2, 104.9)], chain_ok=True)
    assert flat["lost"] == 0 and flat["5xx"] == 0 and flat["memory_flat"] is True
    assert flat["rss_growth_mb"] == {"service": 4.9, "envoy": 0.0}
    assert flat["rss_growth_share"] == {"service": 0.049, "envoy": 0.0}
    assert summarize([_row(1, 100.0), _row(2, 105.1)], chain_ok=True)["memory_flat"] is False  # over 5 %
    leaking = summarize([_row(1, 100.0), _row(2, 180.0, lost=3, fivexx=2)], chain_ok=True)
    assert leaking["lost"] == 3 and leaking["5xx"] == 2 and leaking["memory_flat"] is False
    assert "| 2 | 20 | 10 | 5 | 5 | 2 | 0 | 17 | 3 |" in table([_row(1, 100.0), _row(2, 180.0, lost=3, fivexx=2)])


def test_segment_cannot_exceed_the_duration() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--duration", "30", "--segment", "60"])
    assert parse_args(["--duration", "120", "--rate", "50"]).rate == 50


def test_log_counter_follows_a_rotation_by_rename(tmp_path: Path) -> None:
    # The writer rotates by renaming decisions.jsonl and starting a new one (audit/writer.py):
    # the renamed file's lines were counted already, the new file's are all new.
    current = tmp_path / "decisions.jsonl"
    current.write_bytes(_line("header", 0) + _line("decision", 1) + _line("decision", 2))
    counter = LogCounter(tmp_path)
    assert counter.update() == 2
    current.rename(tmp_path / "decisions.000000000000.jsonl")
    current.write_bytes(_line("header", 3) + _line("decision", 4))
    assert counter.update() == 3
    assert counter.update() == 3


def test_extra_rules_leave_the_repos_policy_answers_as_they_are(tmp_path: Path) -> None:
    """The soak with --extra-rules holds a 200-rule set more; the repo's policy tests (which
    the soak's mix is a part of) still pass against that directory."""
    directory = soak_policy_dir(tmp_path / "policies", 200)
    assert (directory / "generated-200.yaml").is_file() and (directory / "support.yaml").is_file()
    assert aegis(["policy", "test", str(directory), "--tests", str(POLICIES / "tests")]) == 0
    with pytest.raises(SystemExit):
        parse_args(["--extra-rules", "-1"])
