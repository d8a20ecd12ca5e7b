"""Latency percentiles per scenario, as a PNG, from the benchmarks' JSON results.

``python -m bench.plot [--gateway F] [--dlp-gateway F] [--opa-envoy F] [--out bench/results/latency.png]``

One panel per benchmark: ``bench.gateway`` (clean calls at 1 connection and 500 RPS),
``bench.dlp_gateway`` (each call at 1 connection) and ``bench.opa_envoy`` (fixed rates);
P50, P90, P99 and P99.9 for every target, on a log scale, so the floor, Aegis and the
baselines of the same run sit side by side.  Reads only the result files; measures nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PERCENTILES = (("p50", "P50"), ("p90", "P90"), ("p99", "P99"), ("p999", "P99.9"))
GATEWAY_TARGETS = {"direct": "Envoy direct", "floor": "no-op Check", "aegis": "Aegis"}
DLP_TARGETS = {"direct": "direct", "floor": "no-op Check+ext_proc", "aegis": "Aegis"}
OPA_TARGETS = {"direct": "direct", "opa_envoy": "OPA-Envoy", "aegis": "Aegis", "aegis_dlp": "Aegis+DLP"}


class PlotError(ValueError):
    """A result file is missing, unreadable or not the benchmark's shape."""


@dataclass(frozen=True)
class Bar:
    """One scenario's latency percentiles (ms)."""

    label: str
    percentiles_ms: tuple[float, ...]


@dataclass(frozen=True)
class Panel:
    title: str
    bars: tuple[Bar, ...]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlotError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PlotError(f"{path}: not a benchmark result")
    return data


def _percentiles(run: dict[str, Any]) -> tuple[float, ...]:
    latency = run["latency_us"]
    return tuple(float(latency[key]) / 1000 for key, _ in PERCENTILES)


def _median_bars(groups: dict[str, list[tuple[float, ...]]]) -> tuple[tuple[Bar, ...], int]:
    """One bar per label, first seen first: the median of each percentile over its rounds;
    and the most rounds any label has."""
    bars = tuple(
        Bar(label, tuple(statistics.median(column) for column in zip(*found, strict=True)))
        for label, found in groups.items()
    )
    return bars, max((len(found) for found in groups.values()), default=1)


def _rounds_title(title: str, rounds: int) -> str:
    return title + (f", medians of {rounds} rounds" if rounds > 1 else "")


def gateway_panel(data: dict[str, Any]) -> Panel:
    """The clean call at one connection and at 500 RPS; from a ``--rounds N`` result, the
    median of each percentile over the rounds."""
    groups: dict[str, list[tuple[float, ...]]] = {}
    for run in data["measurements"]:
        name = GATEWAY_TARGETS.get(run["target"])
        wanted = (run["mode"] == "connections" and run["load"] == 1) or (run["mode"] == "rate" and run["load"] == 500)
        if name and wanted and run.get("valid", True):
            load = "1 conn" if run["mode"] == "connections" else "500 RPS"
            groups.setdefault(f"{name}\n{load}", []).append(_percentiles(run))
    bars, rounds = _median_bars(groups)
    return Panel(_rounds_title("bench.gateway: clean call", rounds), bars)


def dlp_panel(data: dict[str, Any]) -> Panel:
    """Each call and target at one connection; from a ``--rounds N`` result, the median of
    each percentile over the rounds (the table's figures), one bar per call and target."""
    groups: dict[str, list[tuple[float, ...]]] = {}
    for run in data["runs"]:
        if run["connections"] == 1 and run["target"] in DLP_TARGETS and run.get("valid", True):
            groups.setdefault(f"{run['call']}\n{DLP_TARGETS[run['target']]}", []).append(_percentiles(run))
    bars, rounds = _median_bars(groups)
    return Panel(_rounds_title("bench.dlp_gateway: 1 connection", rounds), bars)


def opa_panel(data: dict[str, Any]) -> Panel:
    bars = [
        Bar(f"{OPA_TARGETS[run['target']]}\n{run['load']} RPS", _percentiles(run))
        for run in sorted(data["runs"], key=lambda r: (r["load"], list(OPA_TARGETS).index(r["target"])))
        if run["mode"] == "rate" and run["target"] in OPA_TARGETS and run.get("valid", True)
    ]
    return Panel("bench.opa_envoy: fixed rates", tuple(bars))


def panels(gateway: Path | None, dlp_gateway: Path | None, opa_envoy: Path | None) -> list[Panel]:
    out = []
    for path, build in ((gateway, gateway_panel), (dlp_gateway, dlp_panel), (opa_envoy, opa_panel)):
        if path is None:
            continue
        try:
            panel = build(_load(path))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlotError(f"{path}: not this benchmark's result ({type(exc).__name__}: {exc})") from exc
        if not panel.bars:
            raise PlotError(f"{path}: no runs to plot")
        out.append(panel)
    if not out:
        raise PlotError("no result files given")
    return out


def render(figure_panels: Sequence[Panel], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    fig, axes = plt.subplots(len(figure_panels), 1, figsize=(13, 4.2 * len(figure_panels)), squeeze=False)
    width = 0.8 / len(PERCENTILES)
    for ax, panel in zip(axes[:, 0], figure_panels, strict=True):
        for index, (_, name) in enumerate(PERCENTILES):
            xs = [i + (index - (len(PERCENTILES) - 1) / 2) * width for i in range(len(panel.bars))]
            ax.bar(xs, [bar.percentiles_ms[index] for bar in panel.bars], width, label=name)
        ax.set_xticks(range(len(panel.bars)), [bar.label for bar in panel.bars], fontsize=7)
        ax.set_yscale("log")
        for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_formatter(FormatStrFormatter("%g"))  # 0.4, 2, 10 rather than 4e-1 in TeX
        ax.set_ylabel("latency, ms (log)")
        ax.set_title(panel.title)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncols=len(PERCENTILES))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", type=Path, default=RESULTS / "gateway-rounds-1207g.json")
    parser.add_argument("--dlp-gateway", type=Path, default=RESULTS / "dlp_gateway-rounds-1207g.json")
    parser.add_argument("--opa-envoy", type=Path, default=RESULTS / "opa_envoy-1207g.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "latency.png")
    args = parser.parse_args(argv)
    try:
        render(panels(args.gateway, args.dlp_gateway, args.opa_envoy), args.out)
    except PlotError as exc:
        parser.exit(2, f"bench.plot: {exc}\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
