"""Runs, ratios and the table of the Aegis vs OPA-Envoy comparison (``bench.opa_envoy``).

Ratios are taken between runs at the same load in the same invocation: each system against
Envoy direct (added latency, throughput), and Aegis against OPA-Envoy (latency and
throughput ratios; below 1 means Aegis is faster or, for RPS, slower).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.result import LoadResult

LABELS = {
    "direct": "Envoy direct",
    "opa_envoy": "Envoy → OPA-Envoy",
    "aegis": "Envoy → Aegis (ext_authz)",
    "aegis_dlp": "Envoy → Aegis + DLP (ext_authz + ext_proc)",
}
AEGIS_SYSTEMS = ("aegis", "aegis_dlp")
BASELINE, RIVAL = "direct", "opa_envoy"


@dataclass(frozen=True)
class Run:
    """One target at one load: the generator's result, Envoy's ext_authz counters over the
    run (None for direct), cores used (CPU s / wall s) by the decider, its Envoy, the whole
    machine and processes other than the benchmark's, and the wait for quiet before it."""

    target: str
    mode: str
    load: int
    result: LoadResult
    checks: dict[str, int] | None
    cores: dict[str, float]
    settle_s: float = 0.0

    @property
    def valid(self) -> bool:
        return self.result.requests > 0 and self.result.error_count == 0

    @property
    def decider_ms_per_request(self) -> float | None:
        """CPU ms the service or plugin spent per completed request: less disturbed than
        latency by other work on the machine."""
        if "decider" not in self.cores or self.result.rps <= 0:
            return None
        return round(self.cores["decider"] / self.result.rps * 1000, 3)

    @property
    def load_label(self) -> str:
        return f"{self.load} RPS" if self.mode == "rate" else f"saturation ({self.load} conn)"

    @property
    def label(self) -> str:
        return f"{LABELS[self.target]}, {self.load_label}"

    def to_json(self) -> dict[str, Any]:
        out = {"target": self.target, "mode": self.mode, "load": self.load, "valid": self.valid}
        out.update(self.result.to_json())
        out["cores"] = self.cores
        out["settle_s"] = self.settle_s
        out["decider_cpu_ms_per_request"] = self.decider_ms_per_request
        if self.checks is not None:
            out["ext_authz_checks"] = self.checks
        return out


def _by_load(runs: Sequence[Run]) -> dict[tuple[str, int], dict[str, Run]]:
    out: dict[tuple[str, int], dict[str, Run]] = {}
    for run in runs:
        out.setdefault((run.mode, run.load), {})[run.target] = run
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def comparisons(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per load and system: against direct, and (Aegis) against OPA-Envoy."""
    out = []
    for (mode, load), targets in _by_load(runs).items():
        base, rival = targets.get(BASELINE), targets.get(RIVAL)
        for name, run in targets.items():
            if name == BASELINE:
                continue
            lat = run.result.latency_us
            row: dict[str, Any] = {"target": name, "mode": mode, "load": load, "valid": run.valid}
            if base is not None:
                b = base.result.latency_us
                row["vs_direct"] = {
                    "rps_ratio": _ratio(run.result.rps, base.result.rps),
                    **{f"added_{p}_ms": round((lat[p] - b[p]) / 1000, 3) for p in ("p50", "p99", "p999")},
                }
            if rival is not None and name in AEGIS_SYSTEMS:
                r = rival.result.latency_us
                mine_cpu, rival_cpu = run.decider_ms_per_request, rival.decider_ms_per_request
                row["vs_opa_envoy"] = {
                    "rps_ratio": _ratio(run.result.rps, rival.result.rps),
                    "decider_cpu_per_request_ratio": _ratio(mine_cpu or 0.0, rival_cpu or 0.0),
                    **{f"{p}_ratio": _ratio(lat[p], r[p]) for p in ("p50", "p90", "p99", "p999")},
                }
            out.append(row)
    return out


def goals(runs: Sequence[Run]) -> dict[str, Any]:
    """Issue 8's bar against OPA-Envoy, per Aegis variant: P99 ≤ OPA-Envoy's at every fixed
    rate, saturated throughput ≥ OPA-Envoy's.  A run with errors meets no goal."""
    loads = _by_load(runs)
    out: dict[str, Any] = {}
    for name in AEGIS_SYSTEMS:
        per_rate = {}
        saturated = None
        for (mode, load), targets in sorted(loads.items()):
            mine, rival = targets.get(name), targets.get(RIVAL)
            if mine is None or rival is None:
                continue
            if mode == "rate":
                ok = mine.valid and (not rival.valid or mine.result.latency_us["p99"] <= rival.result.latency_us["p99"])
                per_rate[str(load)] = ok
            else:
                saturated = mine.valid and mine.result.rps >= rival.result.rps
        out[name] = {
            "p99_le_opa_envoy_at_every_fixed_rate": bool(per_rate) and all(per_rate.values()),
            "p99_le_opa_envoy_per_rate": per_rate,
            "saturated_rps_ge_opa_envoy": saturated,
        }
    return out


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _row(run: Run, cmp: dict[str, Any] | None) -> str:
    r, lat = run.result, run.result.latency_us
    cells = [run.load_label, LABELS[run.target], f"{r.rps:,.0f}"]
    cells += [_ms(lat[p]) for p in ("p50", "p90", "p99", "p999")]
    cells.append(str(r.error_count) + ("" if run.valid else " ⚠"))
    cpu = run.decider_ms_per_request
    cells += [f"{run.cores['decider']:.2f}" if "decider" in run.cores else "", "" if cpu is None else f"{cpu:.2f}"]
    cells.append(f"{run.cores['envoy']:.2f}")
    cells.append(f"{run.cores['others']:.2f}" if "others" in run.cores else "")
    direct = (cmp or {}).get("vs_direct", {})
    rival = (cmp or {}).get("vs_opa_envoy", {})
    cells.append(f"{direct['added_p99_ms']:+.2f}" if direct else "")
    cells.append(_x(direct.get("rps_ratio")) if run.mode == "connections" and direct else "")
    cells += [_x(rival.get("p99_ratio")), _x(rival.get("rps_ratio")) if run.mode == "connections" else ""]
    return "| " + " | ".join(cells) + " |"


def table(runs: Sequence[Run], memory: dict[str, Any]) -> str:
    """Markdown: one row per run with its ratios, then the deciders' memory."""
    index = {(c["target"], c["mode"], c["load"]): c for c in comparisons(runs)}
    lines = [
        "| load | system | RPS | P50 ms | P90 ms | P99 ms | P99.9 ms | errors | decider cores | decider CPU ms/req "
        "| Envoy cores | other processes' cores | +P99 ms vs direct | RPS vs direct | P99 vs OPA-Envoy "
        "| RPS vs OPA-Envoy |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [_row(run, index.get((run.target, run.mode, run.load))) for run in runs]
    lines += ["", "| process | RSS MB | peak RSS MB | with children MB |", "|---|--:|--:|--:|"]
    generated = memory["aegis_service_generated_policy"]
    rows = [
        ("Aegis service, support policy, after the runs", memory["aegis_service_support_policy"]),
        ("opa-envoy-plugin, after the runs", memory["opa_envoy_plugin"]),
        (f"Aegis service, {generated['rules']}-rule policy, ready", generated["ready"]),
        (
            f"Aegis service, {generated['rules']}-rule policy, after {generated['checks']} Checks",
            generated["after_checks"],
        ),
    ]
    for name, m in rows:
        lines.append(f"| {name} | {m['rss_mb']:.1f} | {m['peak_rss_mb']:.1f} | {m['tree_rss_mb']:.1f} |")
    return "\n".join(lines)
