"""The results table and the comparisons against Envoy direct measured in the same run."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from bench.result import LoadResult, median_result, summed_counters

TARGET_LABELS = {
    "upstream": "upstream alone",
    "direct": "Envoy direct",
    "floor": "Envoy → no-op Python Check",
    "aegis": "Envoy → Aegis",
}
# Targets compared against Envoy direct at the same load.
COMPARED = ("floor", "aegis")
MODE_LABELS = {"connections": "wrk", "rate": "open loop"}


@dataclass(frozen=True)
class Scenario:
    """Which target, driven how: ``connections`` (wrk, closed loop) or ``rate`` (open loop)."""

    target: str
    mode: str
    load: int

    @property
    def label(self) -> str:
        return f"{TARGET_LABELS[self.target]} ({MODE_LABELS[self.mode]})"

    @property
    def load_label(self) -> str:
        return f"{self.load} conn" if self.mode == "connections" else f"{self.load} RPS"


@dataclass(frozen=True)
class Measurement:
    """One run; ``checks`` is how many Check calls Envoy made meanwhile (aegis only);
    ``round``: which pass over the plan (``--rounds``)."""

    scenario: Scenario
    result: LoadResult
    checks: dict[str, int] | None = None
    round: int = 0

    @property
    def valid(self) -> bool:
        return self.result.requests > 0 and self.result.error_count == 0

    def to_json(self) -> dict[str, Any]:
        s = self.scenario
        out = {"target": s.target, "mode": s.mode, "load": s.load, "round": self.round, "valid": self.valid}
        out.update(self.result.to_json())
        if self.checks is not None:
            out["ext_authz_checks"] = self.checks
        return out


@dataclass(frozen=True)
class Comparison:
    """A target with ext_authz (Aegis, or the no-op floor) against Envoy direct at the same load."""

    target: str
    mode: str
    load: int
    throughput_ratio: float
    added_p50_ms: float
    added_p99_ms: float
    added_p999_ms: float
    rounds: int = 1  # with several, each figure is the median of the rounds' own comparisons

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def compare(measurements: Sequence[Measurement]) -> list[Comparison]:
    """One comparison per floor or aegis run that has a direct run at the same mode and load."""
    direct = {(m.scenario.mode, m.scenario.load): m.result for m in measurements if m.scenario.target == "direct"}
    out = []
    for m in measurements:
        base = direct.get((m.scenario.mode, m.scenario.load))
        if m.scenario.target not in COMPARED or base is None or base.rps <= 0:
            continue
        a, d = m.result.latency_us, base.latency_us
        out.append(
            Comparison(
                target=m.scenario.target,
                mode=m.scenario.mode,
                load=m.scenario.load,
                throughput_ratio=m.result.rps / base.rps,
                added_p50_ms=(a["p50"] - d["p50"]) / 1000,
                added_p99_ms=(a["p99"] - d["p99"]) / 1000,
                added_p999_ms=(a["p999"] - d["p999"]) / 1000,
            )
        )
    return out


def compare_rounds(measurements: Sequence[Measurement]) -> list[Comparison]:
    """:func:`compare` within each round (against direct of the same round), then, with
    several rounds, the median of each figure per target and load."""
    rounds: dict[int, list[Measurement]] = {}
    for m in measurements:
        rounds.setdefault(m.round, []).append(m)
    groups: dict[tuple[str, str, int], list[Comparison]] = {}
    for round_measurements in rounds.values():
        for c in compare(round_measurements):
            groups.setdefault((c.target, c.mode, c.load), []).append(c)
    figures = [f.name for f in fields(Comparison) if f.type == "float"]
    return [
        group[0]
        if len(group) == 1
        else replace(
            group[0],
            rounds=len(group),
            **{name: statistics.median(getattr(c, name) for c in group) for name in figures},
        )
        for group in groups.values()
    ]


def summary(measurements: Sequence[Measurement]) -> list[Measurement]:
    """One measurement per scenario in first-seen order: with several rounds, the medians of
    their rates and percentiles (``median_result``) and Envoy's counters summed."""
    groups: dict[Scenario, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(m.scenario, []).append(m)
    return [
        Measurement(
            group[0].scenario, median_result([m.result for m in group]), summed_counters([m.checks for m in group])
        )
        for group in groups.values()
    ]


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def table(measurements: Sequence[Measurement], comparisons: Sequence[Comparison]) -> str:
    """A Markdown table: one row per run, floor and Aegis rows with the ratios against direct."""
    by_run = {(c.target, c.mode, c.load): c for c in comparisons}
    header = (
        "| scenario | load | RPS | P50 ms | P99 ms | P99.9 ms | errors | RPS vs direct | +P50 ms | +P99 ms |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    )
    rows = [header]
    for m in measurements:
        r, s = m.result, m.scenario
        cells = [s.label, s.load_label, f"{r.rps:,.0f}", _ms(r.latency_us["p50"]), _ms(r.latency_us["p99"])]
        cells += [_ms(r.latency_us["p999"]), str(r.error_count) + ("" if m.valid else " ⚠")]
        c = by_run.get((s.target, s.mode, s.load))
        if c is None:
            cells += ["", "", ""]
        else:
            cells += [f"{c.throughput_ratio:.2f}x", f"{c.added_p50_ms:+.2f}", f"{c.added_p99_ms:+.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def floor_split(comparisons: Sequence[Comparison]) -> list[str]:
    """Per load, Aegis's added latency split into the no-op floor's and Aegis's own work."""
    floor = {(c.mode, c.load): c for c in comparisons if c.target == "floor"}
    lines = []
    for c in comparisons:
        f = floor.get((c.mode, c.load))
        if c.target != "aegis" or f is None:
            continue
        load = f"{c.load} conn" if c.mode == "connections" else f"{c.load} RPS"
        lines.append(
            f"{load}: Aegis adds {c.added_p50_ms:+.2f} ms P50 / {c.added_p99_ms:+.2f} ms P99 over Envoy direct; "
            f"the no-op Python Check adds {f.added_p50_ms:+.2f} / {f.added_p99_ms:+.2f}, so Aegis's own work is "
            f"{c.added_p50_ms - f.added_p50_ms:+.2f} / {c.added_p99_ms - f.added_p99_ms:+.2f} ms; "
            f"RPS vs direct {f.throughput_ratio:.2f}x (floor) and {c.throughput_ratio:.2f}x (Aegis)"
        )
    return lines
