"""What each fuzz target promises, as plain functions (no atheris import).

Each module exposes a ``Case`` (a well-typed input), an ``exercise(case)`` that runs the
target and raises ``FuzzFailure`` (or lets an unexpected exception escape) when the
boundary breaks its promise.  The atheris harnesses decode bytes into cases; the
hypothesis tests in ``tests/fuzz/`` generate cases from strategies.
"""

from __future__ import annotations


class FuzzFailure(AssertionError):
    """A target broke its promise (a wrong answer rather than an exception)."""
