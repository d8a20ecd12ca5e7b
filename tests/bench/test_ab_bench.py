"""bench.ab's own logic: the base revision's checkout, one side started from a checkout with
its own rendered Envoy config and measured through real Envoy, the medians and ratios.
No timing assertions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ab import (
    NATIVE_CRATES,
    Outcome,
    Round,
    _differs,
    base_checkout,
    base_native,
    expect_ok,
    interpreter,
    measure,
    parse_args,
    start_side,
    start_upstream,
    table,
)
from bench.dlp_gateway import SLACK_PATH
from bench.procs import BenchError, ProcessGroup
from bench.stack import REPO, Target, loopback
from bench.ticket import ticket_json
from extauthz.supervisor import envoy_binary


def _head(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_the_base_is_checked_out_at_its_revision_and_removed_after(tmp_path: Path) -> None:
    with base_checkout("HEAD", tmp_path) as checkout:
        assert (checkout / "extauthz" / "server.py").is_file()
        assert _head(checkout) == _head(REPO)
    assert not checkout.exists()
    listed = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert str(checkout) not in listed


def test_a_base_with_the_working_trees_rust_uses_the_venvs_extensions(tmp_path: Path) -> None:
    if any(_differs("HEAD", crate) for crate in NATIVE_CRATES):
        pytest.skip("the working tree's Rust has uncommitted changes")
    said: list[str] = []
    with base_checkout("HEAD", tmp_path) as checkout:
        assert base_native("HEAD", checkout, tmp_path, said.append) is None
    assert said == [] and not (tmp_path / "base-native").exists()


def test_an_unknown_revision_is_a_clear_error(tmp_path: Path) -> None:
    with (
        pytest.raises(BenchError, match="cannot check out no-such-revision"),
        base_checkout("no-such-revision", tmp_path),
    ):
        pass


@pytest.mark.parametrize(
    "argv",
    [["--rounds", "0"], ["--connections", "0"], ["--duration", "0"], ["--call", "x"], ["--base-python", "/no/python"]],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--base", "HEAD", *argv])


def _round(rps: float, service_us: float, steal_pct: float = 0.0, envoy_us: float = 500.0) -> Round:
    return Round(rps, 2.0, 4.0, envoy_us, service_us, 3.0, 0, steal_pct)


def test_the_table_shows_medians_and_the_candidates_ratios() -> None:
    outcome = Outcome()
    outcome.rounds["base"] = [_round(1000, 500, 0.5), _round(1200, 400, 4.0), _round(900, 600, 1.0)]
    outcome.rounds["candidate"] = [_round(1100, 450), _round(1320, 300), _round(5000, 350)]
    assert outcome.medians("base")["rps"] == 1000 and outcome.medians("candidate")["rps"] == 1320
    text = table(outcome)
    assert "| base (median) | 1,000 | 2.00 | 4.00 | 500 | 500 | 1.000 | 3.00 | 1.0 |" in text
    assert "| candidate / base, of the medians | 1.32x | 1.00x | 1.00x | 1.00x | 0.70x | 0.70x | | |" in text
    # Round by round: RPS 1.10, 1.10, 5.56 (all better); service CPU 0.90, 0.75, 0.58 (all better).
    assert "| candidate / base, paired by round (rounds better) | 1.10x (3/3) |" in text
    assert "| 0.75x (3/3) | 0.75x (3/3) | | |" in text


def test_rounds_are_paired_and_service_cpu_is_read_against_envoys() -> None:
    # The machine slowed in round 2: every process's CPU per call rose, both sides alike.
    outcome = Outcome()
    outcome.rounds["base"] = [_round(1000, 200, envoy_us=400), _round(700, 300, envoy_us=600)]
    outcome.rounds["candidate"] = [_round(1050, 190, envoy_us=400), _round(690, 285, envoy_us=600)]
    paired = outcome.paired()
    assert paired["rps"] == {"ratio": pytest.approx((1.05 + 690 / 700) / 2), "won": 1, "rounds": 2}
    assert paired["service_us"]["ratio"] == pytest.approx(0.95) and paired["service_us"]["won"] == 2
    assert paired["service_per_envoy"]["ratio"] == pytest.approx(0.95)
    assert outcome.rounds["base"][1].service_per_envoy == pytest.approx(0.5)
    assert _round(1000, 200, envoy_us=0).service_per_envoy == 0.0  # no Envoy CPU read: no ratio


def test_a_side_runs_its_own_service_and_envoy_and_is_measured(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    with ProcessGroup(logs) as group:
        upstream = Target("upstream", loopback(), loopback())
        # The service starts on the interpreter it is given (--base-python): here a wrapper
        # that leaves a mark and runs this one.
        marker = tmp_path / "wrapper-ran"
        wrapper = tmp_path / "python-wrapper"
        wrapper.write_text(f'#!/bin/sh\ntouch {marker}\nexec {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        side = start_side(group, "candidate", REPO, tmp_path, upstream.listen, python=str(wrapper), decision_log=True)
        assert marker.is_file()
        start_upstream(group, upstream, {SLACK_PATH: ticket_json()}, envoy_binary(side.config))
        assert (tmp_path / "candidate" / "envoy.yaml").is_file()  # rendered by the checkout's own code
        expect_ok(side, "slack")
        measured = measure(side, "slack", 1, 1.0, tmp_path)
    assert measured.errors == 0 and measured.rps > 0
    # Check, then the response headers and body (Envoy put the body Check redacted in place).
    assert measured.ext_proc_messages == pytest.approx(2.0, abs=0.05)
    assert measured.envoy_us > 0 and measured.service_us > 0
    assert 0.0 <= measured.steal_pct <= 100.0
    # --decision-log: the side's service wrote the signed log, one decision per call
    entries = [json.loads(line) for line in (tmp_path / "candidate" / "decisions.jsonl").read_text().splitlines()]
    decisions = [e for e in entries if e["type"] == "decision"]
    assert entries[0]["type"] == "header" and len(decisions) >= measured.rps * 0.5
    assert {e["tool"] for e in decisions} == {"slack.post_message"}


def test_the_interpreter_of_each_side_is_recorded() -> None:
    found = interpreter(sys.executable)
    assert found["binary"] == os.path.realpath(sys.executable)
    assert found["build"].startswith(platform.python_version())
