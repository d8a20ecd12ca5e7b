"""Aegis vs OPA-Envoy: the same Envoy, the same upstream, the same calls, side by side.

``python -m bench.opa_envoy [--quick] [--out bench/results/opa_envoy.json]``

Starts on free loopback ports (``bench.opa_envoy_stack``) a fixed-response upstream, Envoy
direct, Envoy → Aegis (ext_authz only), Envoy → Aegis with ext_proc (DLP), and Envoy →
opa-envoy-plugin running ``bench/opa_envoy/policy.rego`` — every Envoy from the same
generated bootstrap.  Refuses to measure unless each system allows the small refund and the
CRM read and answers 202 / 403 / 403 / 401 to a refund of 200, a refund of 900, another
tenant's record and a call without a token.  Then drives a 1:1 mix of the allowed refund and
the CRM read through each target, back to back at each load: fixed rates with the open-loop
generator (no coordinated omission), saturation with wrk (32 connections, closed loop).
Records Envoy's ext_authz counters and the CPU of each decider and Envoy per run, the memory
of both deciders after the runs and of an Aegis service on the 200-rule generated policy;
prints a table with the ratios against direct and against OPA-Envoy, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.gateway import _version, ext_authz_counters, machine
from bench.mixload import run_open_loop_mix, run_wrk_mix
from bench.opa_envoy_report import Run, comparisons, goals, table
from bench.opa_envoy_stack import (
    CRM_HOST,
    SYSTEMS,
    TENANT,
    ComparisonStack,
    generated_policy_memory,
    machine_ticks,
    opa_envoy_binary,
    opa_envoy_version,
    settle,
    start_comparison_stack,
    tree_memory,
)
from bench.procs import BenchError, ProcessGroup, raise_on_sigterm, total_cpu_seconds
from bench.request import DENIED_AMOUNT, BenchRequest, refund_request
from bench.stack import DEFAULT_TRANSPORT, TOOL_HOST, TRANSPORTS, UPSTREAM_BODY
from bench.ticket import SSN, ticket_json
from bench.wrk import wrk_binary

DEFAULT_OUT = Path("bench/results/opa_envoy.json")
RATES = (200, 500, 1000)
SATURATION_CONNECTIONS = 32
DURATION_S, QUICK_DURATION_S = 10.0, 3.0
WARMUP_S, QUICK_WARMUP_S = 2, 1  # wrk takes whole seconds
RSS_RULES, RSS_CHECKS, QUICK_RSS_CHECKS = 200, 3000, 1000
APPROVAL_AMOUNT = 200.0
OTHER_TENANT = "globex"
VERIFY_TIMEOUT_S = 15.0
SETTLE_QUIET_CORES, SETTLE_TIMEOUT_S = 0.15, 30.0
TARGETS = ("direct", *SYSTEMS)


@dataclass(frozen=True)
class Settings:
    duration_s: float
    warmup_s: int
    rates: tuple[int, ...]
    connections: int
    rss_checks: int
    envoy_concurrency: int
    aegis_replicas: int = 1  # service processes behind both Aegis Envoys (a shared Redis when > 1)
    transport: str = DEFAULT_TRANSPORT  # Envoy → Aegis and the plugin: Unix sockets or TCP


@dataclass(frozen=True)
class Load:
    """``rate`` (open loop, requests per second) or ``connections`` (wrk, closed loop)."""

    mode: str
    value: int


def plan(settings: Settings) -> list[tuple[Load, str]]:
    """Each load's targets back to back (direct first); the systems' order rotates per load
    so that none is always measured right after another."""
    loads = [Load("rate", r) for r in settings.rates] + [Load("connections", settings.connections)]
    runs = []
    for k, load in enumerate(loads):
        order = SYSTEMS[k % len(SYSTEMS) :] + SYSTEMS[: k % len(SYSTEMS)]
        runs += [(load, name) for name in ("direct", *order)]
    return runs


# --- the calls ----------------------------------------------------------------------------


def crm_request(token: str | None, tenant: str = TENANT) -> BenchRequest:
    """A CRM read of record r-1 of ``tenant`` for support."""
    path = f"/tenants/{tenant}/records/r-1"
    return BenchRequest(CRM_HOST, path, "", token, method="GET", extra_headers=(("x-aegis-purpose", "support"),))


def mix(token: str) -> list[BenchRequest]:
    """What every target is sent, in turn: the allowed refund, the CRM read."""
    return [refund_request(TOOL_HOST, token), crm_request(token)]


# --- verification -------------------------------------------------------------------------


def _send(url: str, request: BenchRequest) -> httpx.Response:
    return httpx.request(
        request.method, url + request.path, content=request.body or None, headers=request.headers, timeout=5.0
    )


def _allowed(url: str, request: BenchRequest, expect: Callable[[str], bool], what: str, name: str) -> None:
    """200 with the expected body; retried for a while (Envoy health-checks the service first)."""
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while True:
        response = _send(url, request)
        if response.status_code == 200 and expect(response.text):
            return
        if time.monotonic() > deadline:
            raise BenchError(
                f"refusing to measure: {name} answered {response.status_code} {response.text[:300]!r} to {what}"
            )
        time.sleep(0.2)


def _redacted(text: str) -> bool:
    """The ticket with crm-redact-pii applied (fields ssn, dob, full_name)."""
    return f'"ssn":"{SSN}"' not in text and '"ssn":"[REDACTED:' in text


def verify(stack: ComparisonStack) -> dict[str, dict[str, int]]:
    """Every target passes the allowed calls; every system also decides. Returns the statuses seen."""
    refund, crm = mix(stack.token)
    ticket = ticket_json()
    _allowed(stack.direct.url, refund, UPSTREAM_BODY.__eq__, "the refund", "direct")
    _allowed(stack.direct.url, crm, ticket.__eq__, "the CRM read", "direct")
    decisions = {
        "refund 20 (allow)": (refund, 200),
        "CRM read, own tenant (allow)": (crm, 200),
        f"refund {APPROVAL_AMOUNT:g} (approval)": (refund_request(TOOL_HOST, stack.token, APPROVAL_AMOUNT), 202),
        f"refund {DENIED_AMOUNT:g} (deny)": (refund_request(TOOL_HOST, stack.token, DENIED_AMOUNT), 403),
        "CRM read, other tenant (deny)": (crm_request(stack.token, OTHER_TENANT), 403),
        "refund without a token": (refund_request(TOOL_HOST, None), 401),
    }
    seen: dict[str, dict[str, int]] = {}
    for name in SYSTEMS:
        url = stack.target(name).url
        _allowed(url, refund, UPSTREAM_BODY.__eq__, "the allowed refund", name)
        _allowed(url, crm, _redacted if name == "aegis_dlp" else ticket.__eq__, "the CRM read", name)
        seen[name] = {}
        for what, (request, status) in decisions.items():
            got = _send(url, request).status_code
            if got != status:
                raise BenchError(f"refusing to measure: {name} answered {got} to {what}; expected {status}")
            seen[name][what] = got
    return seen


# --- measuring ----------------------------------------------------------------------------


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _own_cpu_seconds(stack: ComparisonStack) -> float:
    """CPU of everything this benchmark runs: its processes, the generators it waited for, itself."""
    times = os.times()
    return total_cpu_seconds(stack.all_pids) + times.user + times.system + times.children_user + times.children_system


def measure(stack: ComparisonStack, load: Load, name: str, settings: Settings, workdir: Path) -> Run:
    """One run of the mix through ``name`` at ``load``, once the previous run's work is done,
    with Envoy's ext_authz counters and CPU over the run: the decider's and its Envoy's
    cores, the machine's, and what other processes on the machine took meanwhile."""
    settled = settle(stack.all_pids, SETTLE_QUIET_CORES, SETTLE_TIMEOUT_S)
    target, pids = stack.target(name), stack.pids[name]
    counters = ext_authz_counters(target) if name != "direct" else {}
    cpu = {role: total_cpu_seconds(p) for role, p in pids.items()}
    own, (busy, total), start = _own_cpu_seconds(stack), machine_ticks(), time.monotonic()
    if load.mode == "rate":
        result = run_open_loop_mix(target.url, mix(stack.token), load.value, settings.duration_s, workdir)
    else:
        result = run_wrk_mix(target.url, mix(stack.token), load.value, settings.duration_s, workdir)
    wall = time.monotonic() - start
    cores = {role: round((total_cpu_seconds(p) - cpu[role]) / wall, 3) for role, p in pids.items()}
    busy1, total1 = machine_ticks()
    cores["machine"] = round((busy1 - busy) / max(1, total1 - total) * (os.cpu_count() or 1), 3)
    cores["others"] = round(max(0.0, cores["machine"] - (_own_cpu_seconds(stack) - own) / wall), 3)
    checks = _delta(counters, ext_authz_counters(target)) if name != "direct" else None
    return Run(name, load.mode, load.value, result, checks, cores, settled)


def warm_up(stack: ComparisonStack, settings: Settings, workdir: Path) -> None:
    """A short wrk run per target, not recorded: connections open, caches filled."""
    if settings.warmup_s <= 0:
        return
    for name in TARGETS:
        run_wrk_mix(stack.target(name).url, mix(stack.token), SATURATION_CONNECTIONS, settings.warmup_s, workdir)


def memory(stack: ComparisonStack, group: ProcessGroup, settings: Settings, workdir: Path) -> dict[str, Any]:
    """RSS of both deciders after the runs, and of a fresh Aegis on the 200-rule policy."""
    return {
        # With replicas: the first service process (each is alike).
        "aegis_service_support_policy": tree_memory(stack.pids["aegis"]["decider"][0]),
        "opa_envoy_plugin": tree_memory(stack.pids["opa_envoy"]["decider"][0]),
        "aegis_service_generated_policy": generated_policy_memory(group, workdir, RSS_RULES, settings.rss_checks),
    }


def run_all(settings: Settings, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Start, verify, warm up, run :func:`plan`, measure memory; everything is always stopped."""
    with ProcessGroup(workdir) as group:
        progress("starting upstream, Envoy direct, Aegis (+ its two Envoys), opa-envoy-plugin and its Envoy")
        stack = start_comparison_stack(
            group, workdir, settings.envoy_concurrency, settings.aegis_replicas, settings.transport
        )
        verification = verify(stack)
        progress("verified: every system allows the refund and the CRM read, and answers 202/403/403/401")
        warm_up(stack, settings, workdir)
        runs = []
        for load, name in plan(settings):
            progress(f"{name}, {load.value} {'RPS' if load.mode == 'rate' else 'connections'}")
            runs.append(measure(stack, load, name, settings, workdir))
        progress(f"memory: Aegis on the {RSS_RULES}-rule policy, {settings.rss_checks} Checks")
        return {
            "versions": _versions(stack),
            "verification": verification,
            "runs": runs,
            "memory": memory(stack, group, settings, workdir),
        }


# --- output -------------------------------------------------------------------------------


def _versions(stack: ComparisonStack) -> dict[str, str]:
    return {
        "envoy": _version([stack.envoy_binary, "--version"]),
        "wrk": _version([wrk_binary(), "-v"]),
        "opa_envoy_plugin": opa_envoy_version(),
        "opa_envoy_plugin_opa": _version([opa_envoy_binary(), "version"]),
    }


LIMITATIONS = [
    "Fixed rates use bench.mixload (bench.openloop's generator, latency from the intended send time); "
    "its own error is send_lag_us, in every run alike. wrk2 is not packaged for this machine.",
    "Saturation is wrk -t1 -c32, closed loop: coordinated omission included, same for every system.",
    "Load generator, Envoys, the Aegis service and opa-envoy-plugin share the machine's cores.",
    "opa-envoy-plugin runs Go on every core (GOMAXPROCS = nproc); the Aegis service is one Python process.",
    "Aegis writes its JSON decision log line per call (its default); OPA-Envoy's decision log is off (its default).",
    "Approval (202): Aegis also stores an approval and returns its id; the Rego policy only shapes the answer.",
]


def report(data: dict[str, Any], settings: Settings, context: dict[str, Any]) -> dict[str, Any]:
    runs: list[Run] = data["runs"]
    return {
        "command": "python -m bench.opa_envoy " + shlex.join(sys.argv[1:]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": asdict(settings),
        **context,
        "versions": data["versions"],
        "mix": ["POST payments.demo/v1/refunds amount 20", f"GET {CRM_HOST}/tenants/{TENANT}/records/r-1"],
        "verification": data["verification"],
        "runs": [r.to_json() for r in runs],
        "comparisons": comparisons(runs),
        "goals": goals(runs),
        "memory": data["memory"],
        "limitations": LIMITATIONS,
    }


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(prog="python -m bench.opa_envoy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S:g} s runs instead of {DURATION_S:g} s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--duration", type=float, help="seconds per run (at most 10; whole seconds for wrk)")
    parser.add_argument("--warmup", type=int, help="seconds of wrk per target before measuring (0: none)")
    parser.add_argument("--rates", help="fixed rates, comma-separated (default 200,500,1000)")
    parser.add_argument("--connections", type=int, default=SATURATION_CONNECTIONS, help="wrk connections (32)")
    parser.add_argument("--rss-checks", type=int, help=f"Checks sent to the {RSS_RULES}-rule service")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a deleted temp dir)")
    parser.add_argument("--envoy-concurrency", type=int, default=1, help="worker threads per Envoy (default 1)")
    parser.add_argument(
        "--aegis-replicas", type=int, default=1, help="aegis serve processes behind Aegis's Envoys (default 1)"
    )
    parser.add_argument(
        "--transport", choices=TRANSPORTS, default=DEFAULT_TRANSPORT, help="Envoy → gRPC services (default unix)"
    )
    args = parser.parse_args(argv)
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    if not 1 <= duration <= DURATION_S:
        parser.error(f"--duration must be in [1, {DURATION_S:g}]")
    try:
        rates = tuple(int(r) for r in args.rates.split(",")) if args.rates else RATES
    except ValueError:
        parser.error(f"--rates: comma-separated integers, got {args.rates!r}")
    if not rates or min(rates) <= 0 or args.connections <= 0:
        parser.error("--rates and --connections must be positive")
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP_S if args.quick else WARMUP_S)
    checks = args.rss_checks if args.rss_checks is not None else (QUICK_RSS_CHECKS if args.quick else RSS_CHECKS)
    settings = Settings(
        duration,
        warmup,
        rates,
        args.connections,
        max(1, checks),
        args.envoy_concurrency,
        args.aegis_replicas,
        args.transport,
    )
    return args, settings


@contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="aegis-opa-envoy-") as tmp:
        yield Path(tmp)


def _progress(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(argv)
    raise_on_sigterm()
    load_before = os.getloadavg()
    try:
        with _workdir(args.workdir) as workdir:
            data = run_all(settings, workdir, _progress)
    except BenchError as exc:
        print(f"bench.opa_envoy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.opa_envoy: interrupted; every started process was stopped", file=sys.stderr)
        return 130
    context = {"loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    result = report(data, settings, context)
    print(table(data["runs"], result["memory"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    for run in data["runs"]:
        if not run.valid:
            print(f"bench.opa_envoy: {run.label}: errors {run.result.errors} checks {run.checks}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
