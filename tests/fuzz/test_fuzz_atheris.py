"""A short coverage-guided run of every atheris harness (fuzz/<target>.py), as `make test` runs it.

Each harness runs in its own process through the runner (``python -m fuzz <target>``) for
a bounded number of executions from its seed corpus; libFuzzer exits non-zero, and leaves
a crash artifact, when an input breaks the target's promise.  The long runs are documented
in docs/security.md ("Fuzzing").
"""

from __future__ import annotations

import pytest

from fuzz import TARGETS
from fuzz.__main__ import run

# Executions per harness: enough to replay the seeds and mutate a while, small enough that
# the five runs take about 25 s together on two shared cores.
RUNS = {"check": 1500, "ext_proc": 1500, "policy_yaml": 800, "jwt": 2000, "dlp_scan": 2000}


def test_every_target_has_a_short_run():
    assert set(RUNS) == set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_harness_runs_clean(target, tmp_path):
    result = run(target, runs=RUNS[target], workdir=tmp_path, nice=0)
    assert result.ok, result.output[-6000:]
    assert result.executions == RUNS[target]
    assert not any((tmp_path / "artifacts" / target).iterdir())
