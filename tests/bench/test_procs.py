"""bench.procs: the machine's CPU reading that tells a round slowed by the host."""

from __future__ import annotations

import pytest

from bench.procs import MachineCpu

# /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice.
BEFORE = "cpu  1000 10 300 5000 20 0 40 30 7 0\ncpu0 500 5 150 2500 10 0 20 15 3 0\n"
AFTER = "cpu  1400 10 400 5400 20 0 60 130 9 0\ncpu0 700 5 200 2700 10 0 30 65 4 0\n"


def test_a_reading_sums_the_first_eight_fields_and_keeps_steal() -> None:
    reading = MachineCpu.read(BEFORE)
    assert reading == MachineCpu(total=1000 + 10 + 300 + 5000 + 20 + 0 + 40 + 30, steal=30)


def test_steal_is_its_share_of_the_time_between_two_readings() -> None:
    before, after = MachineCpu.read(BEFORE), MachineCpu.read(AFTER)
    # 1,020 ticks passed (400 user, 100 system, 400 idle, 20 softirq, 100 steal; guest is in user).
    assert after.total - before.total == 1020
    assert after.steal_pct_since(before) == pytest.approx(100 * 100 / 1020, abs=0.01)
    assert before.steal_pct_since(before) == 0.0


def test_this_machine_can_be_read() -> None:
    first = MachineCpu.read()
    second = MachineCpu.read()
    assert second.total >= first.total > 0 and second.steal >= first.steal >= 0
    assert 0.0 <= second.steal_pct_since(first) <= 100.0
