"""What one load run measured, whichever generator produced it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


@dataclass(frozen=True)
class LoadResult:
    """Requests completed, their rate, error counters and latency (µs) of one run."""

    requests: int
    duration_s: float
    rps: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(round(pct / 100.0 * len(ordered), 9)))  # 99.9% of 1000 is 999, not 1000
    return ordered[min(rank, len(ordered)) - 1]


def summarize(samples_us: Sequence[float]) -> dict[str, float]:
    """min, mean, max and :data:`PERCENTILES` of latency samples (empty: zeros)."""
    if not samples_us:
        return {"min": 0.0, "mean": 0.0, "max": 0.0, **dict.fromkeys(PERCENTILES, 0.0)}
    ordered = sorted(samples_us)
    out = {"min": ordered[0], "mean": sum(ordered) / len(ordered), "max": ordered[-1]}
    out.update({name: percentile(ordered, pct) for name, pct in PERCENTILES.items()})
    return {k: round(v, 1) for k, v in out.items()}


def median_result(results: Sequence[LoadResult]) -> LoadResult:
    """Several rounds of one run as one: the medians of their rates and latency percentiles,
    their requests, durations and errors summed."""
    if len(results) == 1:
        return results[0]
    errors: dict[str, int] = {}
    for result in results:
        for name, count in result.errors.items():
            errors[name] = errors.get(name, 0) + count
    return LoadResult(
        requests=sum(r.requests for r in results),
        duration_s=sum(r.duration_s for r in results),
        rps=statistics.median(r.rps for r in results),
        errors=errors,
        latency_us={name: statistics.median(r.latency_us[name] for r in results) for name in results[0].latency_us},
    )


def summed_counters(counters: Sequence[dict[str, int] | None]) -> dict[str, int] | None:
    """Envoy's counters of several rounds of one run, added up; None unless every round has them."""
    if any(c is None for c in counters):
        return None
    total: dict[str, int] = {}
    for round_counters in counters:
        for name, count in (round_counters or {}).items():
            total[name] = total.get(name, 0) + count
    return total
