"""Gateway benchmark: what Aegis (ext_authz Check) costs over Envoy alone.

``python -m bench.gateway [--quick] [--rounds N] [--out bench/out/gateway.json]``

Starts on free loopback ports a fixed-response upstream, Envoy direct (no ext_authz),
Envoy → a no-op Python Check → upstream (the floor: ``bench.noop_authz``) and Envoy → Aegis →
upstream (see ``bench.stack``); checks that the allowed refund gets a 200 from
the upstream through all three and that Aegis really decides (403 for a refund of 900, 401 without
a token); then drives each with wrk (closed loop, fixed connections) and with the open-loop
generator (fixed rate), prints a table with the ratios against direct, and writes JSON.
Every process it started is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.openloop import run_open_loop
from bench.procs import BenchError, ProcessGroup, raise_on_sigterm
from bench.report import COMPARED, Comparison, Measurement, Scenario, compare_rounds, floor_split, summary, table
from bench.request import DENIED_AMOUNT, BenchRequest, refund_request
from bench.result import LoadResult
from bench.stack import (
    DEFAULT_TRANSPORT,
    TOOL_HOST,
    TRANSPORTS,
    UPSTREAM_BODY,
    BenchStack,
    Target,
    start_bench_stack,
)
from bench.wrk import run_wrk, wrk_binary

DEFAULT_OUT = Path("bench/out/gateway.json")
CONNECTIONS = (1, 32)
RATES = (200, 500)
DURATION_S, QUICK_DURATION_S = 10.0, 3.0
WARMUP_S, QUICK_WARMUP_S = 2.0, 1.0
WARMUP_CONNECTIONS = 32
VERIFY_TIMEOUT_S = 10.0
EXT_AUTHZ_STATS = "http.aegis.ext_authz."


@dataclass(frozen=True)
class Settings:
    """How long and how hard; ``--quick`` shortens every run."""

    duration_s: float
    warmup_s: float
    envoy_concurrency: int
    # False: aegis.yaml sets policy.decision_cache 0, so every Check runs the tool match and
    # the engine, as a stream of distinct calls would (the measured call repeats).
    decision_cache: bool = True
    transport: str = DEFAULT_TRANSPORT
    # Passes over the plan; the table and the comparisons give the rounds' medians.  One
    # run's direct moves by up to 1.7x between runs here (docs/performance.md).
    rounds: int = 1


def plan(round_: int = 0) -> list[Scenario]:
    """Runs in order; each load level runs its targets back to back, so they share conditions,
    in the reverse order every other round (``--rounds``), so none always goes first."""

    def ordered(targets: tuple[str, ...]) -> tuple[str, ...]:
        return targets[::-1] if round_ % 2 else targets

    runs = [
        Scenario(t, "connections", c) for c in CONNECTIONS for t in ordered(("upstream", "direct", "floor", "aegis"))
    ]
    runs += [Scenario(t, "rate", r) for r in RATES for t in ordered(("direct", "floor", "aegis"))]
    return runs


# --- verification -------------------------------------------------------------------------


def _post(target: Target, request: BenchRequest) -> httpx.Response:
    return httpx.post(target.url + request.path, content=request.body, headers=request.headers, timeout=5.0)


def _expect(target: Target, request: BenchRequest, status: int, what: str, body: str | None = None) -> None:
    response = _post(target, request)
    if response.status_code != status or (body is not None and response.text != body):
        raise BenchError(
            f"refusing to measure: {target.name} answered {response.status_code} {response.text[:300]!r} "
            f"to {what}; expected {status}" + (f" with the upstream's body {body!r}" if body else "")
        )


def _expect_eventually(target: Target, request: BenchRequest, what: str) -> None:
    """The allowed call through Aegis: Envoy may still be health-checking the service at first."""
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while True:
        try:
            _expect(target, request, 200, what, UPSTREAM_BODY)
            return
        except BenchError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def verify(stack: BenchStack) -> None:
    """Refuse to benchmark error pages: every target must answer what the policy says."""
    allowed = refund_request(TOOL_HOST, stack.token)
    _expect(stack.upstream, allowed, 200, "the refund", UPSTREAM_BODY)
    _expect(stack.direct, allowed, 200, "the allowed refund", UPSTREAM_BODY)
    if stack.floor is not None:  # the no-op Check lets everything through
        _expect_eventually(stack.floor, allowed, "the refund (no-op Check)")
    _expect_eventually(stack.aegis, allowed, "the allowed refund")
    _expect(stack.aegis, refund_request(TOOL_HOST, stack.token, DENIED_AMOUNT), 403, "a refund of 900")
    _expect(stack.aegis, refund_request(TOOL_HOST, None), 401, "a refund without a token")


# --- measuring ----------------------------------------------------------------------------


def ext_authz_counters(target: Target) -> dict[str, int]:
    """Envoy's ext_authz counters (ok, denied, error...) from the admin API."""
    text = httpx.get(f"http://{target.admin}/stats", params={"filter": "ext_authz"}, timeout=5.0).text
    counters = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(EXT_AUTHZ_STATS) and value.strip().isdigit():
            counters[name.removeprefix(EXT_AUTHZ_STATS)] = int(value)
    return counters


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _load(target: Target, scenario: Scenario, token: str, settings: Settings, workdir: Path) -> LoadResult:
    """wrk for a fixed number of connections, the open-loop generator for a fixed rate."""
    request = refund_request(TOOL_HOST, token)
    if scenario.mode == "connections":
        return run_wrk(target.url, request, scenario.load, settings.duration_s, workdir)
    return run_open_loop(target.url, request, scenario.load, settings.duration_s, workdir)


def measure(stack: BenchStack, scenario: Scenario, settings: Settings, workdir: Path, round_: int = 0) -> Measurement:
    """One run of ``scenario``; behind ext_authz, also Envoy's ext_authz counters over the run."""
    target: Target = getattr(stack, scenario.target)
    if scenario.target not in COMPARED:
        return Measurement(scenario, _load(target, scenario, stack.token, settings, workdir), round=round_)
    before = ext_authz_counters(target)
    result = _load(target, scenario, stack.token, settings, workdir)
    return Measurement(scenario, result, _delta(before, ext_authz_counters(target)), round=round_)


def warm_up(stack: BenchStack, settings: Settings, workdir: Path) -> None:
    """A short wrk run per target, not recorded: connections open, first-call costs paid."""
    request = refund_request(TOOL_HOST, stack.token)
    for target in (stack.upstream, stack.direct, stack.floor, stack.aegis):
        if target is None:
            continue
        run_wrk(target.url, request, WARMUP_CONNECTIONS, settings.warmup_s, workdir)


def run_all(
    settings: Settings, workdir: Path, progress: Callable[[str], None]
) -> tuple[list[Measurement], dict[str, str]]:
    """Start the stack, verify it, warm it up and run :func:`plan`; the stack is always stopped.

    Returns the measurements and the versions of the tools involved.
    """
    with ProcessGroup(workdir) as group:
        progress("starting upstream, Envoy direct, the no-op Check and its Envoy, the Aegis service and its Envoy")
        stack = start_bench_stack(
            group,
            workdir,
            settings.envoy_concurrency,
            decision_cache=settings.decision_cache,
            transport=settings.transport,
        )
        versions = {"envoy": _version([stack.envoy_binary, "--version"]), "wrk": _version([wrk_binary(), "-v"])}
        verify(stack)
        progress("verified: direct and floor 200, Aegis 200 (allowed), 403 (amount 900), 401 (no token)")
        warm_up(stack, settings, workdir)
        measurements = []
        for round_ in range(settings.rounds):
            for scenario in plan(round_):
                where = f"round {round_ + 1}/{settings.rounds}: " if settings.rounds > 1 else ""
                progress(f"{where}{scenario.label}, {scenario.load_label}, {settings.duration_s:g} s")
                measurements.append(measure(stack, scenario, settings, workdir, round_))
        return measurements, versions


# --- output -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        # The build matters: pyenv's default (shared libpython, no PGO) runs Aegis's Python ~15 %
        # slower than a distribution's PGO/LTO build (docs/performance.md, "The interpreter").
        "python_binary": os.path.realpath(sys.executable),
        "python_build": " ".join(sys.version.split()),
    }


def _version(argv: list[str]) -> str:
    """The first non-empty line a ``--version`` command prints."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def report(
    measurements: list[Measurement], comparisons: list[Comparison], settings: Settings, context: dict[str, Any]
) -> dict[str, Any]:
    """The JSON written to ``--out``."""
    return {
        "command": "python -m bench.gateway " + shlex.join(sys.argv[1:]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": settings.__dict__,
        **context,
        "measurements": [m.to_json() for m in measurements],
        "comparisons": [c.to_json() for c in comparisons],
        "aegis_over_floor": floor_split(comparisons),
    }


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S:g} s runs instead of {DURATION_S:g} s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--duration", type=float, help="seconds per run (at most 10)")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a deleted temp dir)")
    parser.add_argument("--envoy-concurrency", type=int, default=1, help="worker threads per Envoy (default 1)")
    parser.add_argument(
        "--no-decision-cache",
        action="store_true",
        help="policy.decision_cache: 0 (every Check decided afresh, as for distinct calls)",
    )
    parser.add_argument(
        "--transport", choices=TRANSPORTS, default=DEFAULT_TRANSPORT, help="Envoy → gRPC services (default unix)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="passes over every target and load, alternating their order; the table gives the rounds' medians",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    if not 0 < duration <= DURATION_S:
        parser.error(f"--duration must be in (0, {DURATION_S:g}]")
    warmup = QUICK_WARMUP_S if args.quick else WARMUP_S
    settings = Settings(
        duration,
        warmup,
        args.envoy_concurrency,
        decision_cache=not args.no_decision_cache,
        transport=args.transport,
        rounds=args.rounds,
    )
    return args, settings


@contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="aegis-bench-") as tmp:
        yield Path(tmp)


def _progress(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(argv)
    raise_on_sigterm()
    load_before = os.getloadavg()
    try:
        with _workdir(args.workdir) as workdir:
            measurements, versions = run_all(settings, workdir, _progress)
    except BenchError as exc:
        print(f"bench.gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.gateway: interrupted; every started process was stopped", file=sys.stderr)
        return 130
    comparisons = compare_rounds(measurements)
    print(table(summary(measurements), comparisons))
    split = floor_split(comparisons)
    print("\n".join(["", *split]))
    context = {"versions": versions, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report(measurements, comparisons, settings, context), indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    invalid = [m for m in measurements if not m.valid]
    for m in invalid:
        checks = f", Envoy ext_authz counters {m.checks}" if m.checks else ""
        print(
            f"bench.gateway: {m.scenario.label}, {m.scenario.load_label}: errors {m.result.errors}{checks}",
            file=sys.stderr,
        )
    return 1 if invalid else 0


if __name__ == "__main__":
    raise SystemExit(main())
