"""Redaction (ext_proc) through real Envoy: what the full chain costs over Envoy alone.

``python -m bench.dlp_gateway [--quick] [--rounds N] [--out bench/out/dlp_gateway.json]``

Starts on free loopback ports a fixed-response upstream (small JSON for the refund, a ~2 KB
support ticket with 11 PII items for the Slack post and the CRM read), Envoy direct (no
ext_authz, no ext_proc), Envoy → Aegis with the **full** generated bootstrap
(ext_authz → ext_proc instances → router; the service serves ext_proc on ``service.ext_proc``) and the
floor: the same bootstrap in front of ``bench.noop_authz``, a Check and an ext_proc that ask
for the same phases as Aegis and change nothing (for the two redacted calls).
Verifies that direct returns the ticket as is and Aegis redacts it, then drives, back to
back at 1 and 32 connections (wrk), three calls through both:

* ``refund``: allowed, nothing to redact: Check names no ext_proc instance, no stream;
* ``slack``: a Slack post with an SSN, an e-mail and a phone number under
  ``slack-redact-pii`` (detectors): the request body and the ticket in the response are
  redacted (4 ext_proc messages: headers and bodies both ways);
* ``crm``: a CRM read under ``crm-redact-pii`` (fields ssn, dob, full_name): the response
  body is redacted, the request has none (2 messages: the response headers and body).

The policy is the repo's support policy with its business-hours calendar open all week, so
the Slack rules allow at any time of day.  Envoy's ext_authz and ext_proc counters are read
around every Aegis run: each measured request was a Check and an ext_proc stream; and the
CPU of each target's Envoy and gRPC service (Aegis, or the floor's no-op) around every run,
per request: what separates Aegis from its floor, Envoy's side or the service's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.gateway import machine
from bench.procs import BenchError, MachineCpu, ProcessGroup, raise_on_sigterm, total_cpu_seconds
from bench.request import BenchRequest, refund_request
from bench.result import LoadResult, median_result, summed_counters
from bench.stack import (
    DEFAULT_TRANSPORT,
    POLICIES,
    REPO,
    TOOL_HOST,
    TRANSPORTS,
    UPSTREAM_BODY,
    Target,
    direct_bootstrap,
    grpc_listen,
    loopback,
    moved_config,
    start_envoy,
    start_service,
    upstream_bootstrap,
    write_aegis_config,
)
from bench.ticket import SSN, ticket_json
from bench.wrk import run_wrk
from extauthz.config import AegisConfig
from extauthz.devtokens import mint_token
from extauthz.envoyconfig import EXT_PROC_FILTER, render_bootstrap
from extauthz.supervisor import envoy_binary

DEFAULT_OUT = Path("bench/out/dlp_gateway.json")
CONNECTIONS = (1, 32)
CALLS = ("refund", "slack", "crm")
DURATION_S, QUICK_DURATION_S = 8.0, 3.0
WARMUP_S = 2.0  # wrk takes whole seconds
SLACK_HOST, CRM_HOST = "slack.demo", "crm.demo"
SLACK_PATH, CRM_PATH = "/api/chat.postMessage", "/tenants/acme/records/r-1"
SCOPES = ("payments.refund", "slack.post_message", "crm.get_record")
VERIFY_TIMEOUT_S = 10.0
STAT_PREFIX = "http.aegis."


@dataclass(frozen=True)
class DlpStack:
    direct: Target
    aegis: Target
    token: str
    binary: str
    floor: Target | None = None  # Envoy → no-op Check + no-op ext_proc (bench.noop_authz)
    # target → role ("envoy", "service": its gRPC service) → process ids, for CPU per request.
    pids: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)

    def target(self, name: str) -> Target:
        found = {"direct": self.direct, "aegis": self.aegis, "floor": self.floor}[name]
        if found is None:
            raise BenchError(f"no {name} target in this stack")
        return found


# --- setup --------------------------------------------------------------------------------


def bench_policy_dir(target: Path) -> Path:
    """The repo's policies with ``business_hours`` open every day, all day."""
    shutil.copytree(POLICIES / "lib", target / "lib", dirs_exist_ok=True)
    support = yaml.safe_load((POLICIES / "support.yaml").read_text(encoding="utf-8"))
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    support["calendars"]["business_hours"].update(
        windows=[{"days": days, "start": "00:00", "end": "24:00"}], holidays=[]
    )
    (target / "support.yaml").write_text(yaml.safe_dump(support, sort_keys=False), encoding="utf-8")
    return target


def requests(token: str | None) -> dict[str, BenchRequest]:
    """The three calls; ``token`` None gives them without credentials (direct)."""
    text = f"Customer {SSN} (jane.roe@example.com, +1 415-555-0142) asks about a duplicate charge."
    slack = json.dumps({"channel": "#support", "text": text}, separators=(",", ":"))
    return {
        "refund": refund_request(TOOL_HOST, token),
        "slack": BenchRequest(SLACK_HOST, SLACK_PATH, slack, token),
        "crm": BenchRequest(
            CRM_HOST, CRM_PATH, "", token, method="GET", extra_headers=(("x-aegis-purpose", "support"),)
        ),
    }


def start_dlp_stack(
    group: ProcessGroup, workdir: Path, envoy_concurrency: int, transport: str = DEFAULT_TRANSPORT
) -> DlpStack:
    upstream = Target("upstream", loopback(), loopback())
    policy_dir = bench_policy_dir(workdir / "policies")
    hosts = (TOOL_HOST, SLACK_HOST, CRM_HOST)
    config = write_aegis_config(workdir, upstream.listen, policy_dir=policy_dir, hosts=hosts, transport=transport)
    direct = Target("direct", loopback(), loopback())
    aegis = Target("aegis", config.envoy.listen, config.envoy.admin)
    floor = Target("floor", loopback(), loopback())
    binary = envoy_binary(config)
    bodies = {SLACK_PATH: ticket_json(), "/tenants/": ticket_json()}
    try:
        start_envoy(
            group, "upstream", upstream_bootstrap(upstream.listen, upstream.admin, bodies), upstream.admin, binary, 1
        )
        direct_boot = direct_bootstrap(config, direct.listen, direct.admin, workdir / "direct-access.log")
        start_envoy(group, "direct", direct_boot, direct.admin, binary, envoy_concurrency)
        start_service(group, config)
        start_envoy(group, "aegis", full_bootstrap(config), aegis.admin, binary, envoy_concurrency)
        noop_check = grpc_listen(workdir, "noop-check", transport)
        noop_proc = grpc_listen(workdir, "noop-ext-proc", transport)
        group.spawn("noop-authz", [sys.executable, "-m", "bench.noop_authz", noop_check, noop_proc], cwd=REPO)
        floor_boot = full_bootstrap(
            moved_config(config, floor, workdir / "floor-access.log"), [noop_check], [noop_proc]
        )
        start_envoy(group, "floor", floor_boot, floor.admin, binary, envoy_concurrency)
    except OSError as exc:
        raise BenchError(f"cannot start the stack: {exc}") from exc
    token = mint_token(config.identity, agent="bench-bot", tenant="acme", scopes=SCOPES, ttl_s=1800)
    pids = {
        "direct": {"envoy": (group.pid("direct"),)},
        "aegis": {"envoy": (group.pid("aegis"),), "service": (group.pid("aegis-service"),)},
        "floor": {"envoy": (group.pid("floor"),), "service": (group.pid("noop-authz"),)},
    }
    return DlpStack(direct, aegis, token, binary, floor, pids)


def full_bootstrap(
    config: AegisConfig, service_endpoints: list[str] | None = None, ext_proc_endpoints: list[str] | None = None
) -> dict[str, Any]:
    """The generated bootstrap with ext_proc (on the given replicas' endpoints, default the
    config's); refuses one without the filter."""
    bootstrap = render_bootstrap(
        config, with_ext_proc=True, service_endpoints=service_endpoints, ext_proc_endpoints=ext_proc_endpoints
    )
    if EXT_PROC_FILTER not in json.dumps(bootstrap):
        raise BenchError("the generated bootstrap has no ext_proc filter")
    return bootstrap


# --- verification -------------------------------------------------------------------------


def _send(target: Target, request: BenchRequest) -> httpx.Response:
    return httpx.request(
        request.method, target.url + request.path, content=request.body or None, headers=request.headers, timeout=5.0
    )


def send_once_ready(target: Target, request: BenchRequest) -> httpx.Response:
    """The first 200, or the last answer after VERIFY_TIMEOUT_S (Envoy health-checks first)."""
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while True:
        response = _send(target, request)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def verify(stack: DlpStack) -> dict[str, Any]:
    """Direct and the floor return the upstream bodies as they are; Aegis allows, and redacts the ticket."""
    plain, signed = requests(None), requests(stack.token)
    expected = {"refund": UPSTREAM_BODY, "slack": ticket_json(), "crm": ticket_json()}
    seen: dict[str, Any] = {}
    for name in CALLS:
        direct = _send(stack.direct, plain[name])
        if direct.status_code != 200 or direct.text != expected[name]:
            raise BenchError(
                f"refusing to measure: direct answered {direct.status_code} {direct.text[:200]!r} to {name}"
            )
        before = ext_counters(stack.aegis, "ext_proc.")
        aegis = send_once_ready(stack.aegis, signed[name])
        if aegis.status_code != 200:
            raise BenchError(f"refusing to measure: Aegis answered {aegis.status_code} {aegis.text[:300]!r} to {name}")
        redacted = aegis.text != expected[name] and "[REDACTED:" in aegis.text
        if redacted != (name != "refund"):
            raise BenchError(f"refusing to measure: Aegis {name} response redacted={redacted}: {aegis.text[:300]!r}")
        seen[name] = {
            "response_bytes": len(aegis.content),
            "ext_proc": _delta(before, ext_counters(stack.aegis, "ext_proc.")),
        }
        if stack.floor is not None and "floor" in targets_for(name):
            floor = send_once_ready(stack.floor, signed[name])
            if floor.status_code != 200 or floor.text != expected[name]:
                raise BenchError(f"refusing to measure: the floor answered {floor.status_code} {floor.text[:200]!r}")
    return seen


# --- measuring ----------------------------------------------------------------------------


def ext_counters(target: Target, prefix: str) -> dict[str, int]:
    """Envoy's ``http.aegis.<prefix>*`` counters (ext_authz. or ext_proc.)."""
    text = httpx.get(f"http://{target.admin}/stats", params={"filter": prefix.rstrip(".")}, timeout=5.0).text
    counters = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(STAT_PREFIX + prefix) and value.strip().isdigit():
            counters[name.removeprefix(STAT_PREFIX)] = int(value)
    return counters


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@dataclass(frozen=True)
class Run:
    call: str
    target: str
    connections: int
    result: LoadResult
    counters: dict[str, int] | None = None
    # role → CPU µs per request over the run: the target's Envoy, and its gRPC service.
    cpu_us: dict[str, float] = field(default_factory=dict)
    round: int = 0  # with --rounds, which pass over the calls and targets
    steal_pct: float = 0.0  # the machine's CPU time the hypervisor took over the run (bench.procs)

    @property
    def valid(self) -> bool:
        return self.result.requests > 0 and self.result.error_count == 0

    def to_json(self) -> dict[str, Any]:
        out = {"call": self.call, "target": self.target, "connections": self.connections, "round": self.round}
        out["valid"] = self.valid
        out.update(self.result.to_json())
        return {**out, "envoy_counters": self.counters, "cpu_us_per_request": self.cpu_us, "steal_pct": self.steal_pct}


def measure(
    stack: DlpStack, call: str, target_name: str, connections: int, duration_s: float, workdir: Path, round_: int = 0
) -> Run:
    """One wrk run through ``target_name``, with its Envoy's ext_authz / ext_proc counters
    (not for direct) and its processes' CPU read around it."""
    target = stack.target(target_name)
    request = requests(None if target_name == "direct" else stack.token)[call]
    roles = stack.pids.get(target_name, {})
    counters = _counters(target) if target_name != "direct" else None
    cpu_before = {role: total_cpu_seconds(pids) for role, pids in roles.items()}
    machine_before = MachineCpu.read()
    result = run_wrk(target.url, request, connections, duration_s, workdir)
    cpu = {role: total_cpu_seconds(pids) - cpu_before[role] for role, pids in roles.items()}
    steal_pct = MachineCpu.read().steal_pct_since(machine_before)
    delta = None if counters is None else _delta(counters, _counters(target))
    return Run(call, target_name, connections, result, delta, cpu_per_request(cpu, result), round_, steal_pct)


def _counters(target: Target) -> dict[str, int]:
    return {**ext_counters(target, "ext_authz."), **ext_counters(target, "ext_proc.")}


def cpu_per_request(cpu_seconds: Mapping[str, float], result: LoadResult) -> dict[str, float]:
    """CPU seconds per role over a run → µs per answered request (nothing for an empty run)."""
    if result.requests <= 0:
        return {}
    return {role: round(seconds * 1e6 / result.requests, 1) for role, seconds in cpu_seconds.items()}


def targets_for(call: str) -> tuple[str, ...]:
    """The floor stands in for the redacted calls only (Aegis skips ext_proc for the refund)."""
    return ("direct", "aegis") if call == "refund" else ("direct", "floor", "aegis")


def warm_up(stack: DlpStack, workdir: Path) -> None:
    for call in CALLS:
        for name in targets_for(call):
            token = None if name == "direct" else stack.token
            run_wrk(stack.target(name).url, requests(token)[call], 8, WARMUP_S, workdir)


def run_all(
    duration_s: float,
    envoy_concurrency: int,
    workdir: Path,
    progress: Callable[[str], None],
    transport: str = DEFAULT_TRANSPORT,
    rounds: int = 1,
) -> tuple[list[Run], dict[str, Any]]:
    """Every call through its targets at each connection count, ``rounds`` times over; a
    round runs the targets in the opposite order of the one before, so a machine that slows
    down or speeds up over a round does not favour one target."""
    with ProcessGroup(workdir) as group:
        progress(
            f"starting upstream, Envoy direct, the Aegis service and Envoy → Aegis (ext_proc; gRPC over {transport})"
        )
        stack = start_dlp_stack(group, workdir, envoy_concurrency, transport)
        verified = verify(stack)
        progress(f"verified: direct bodies unchanged; Aegis 200 and redacted (ext_proc per call: {verified})")
        warm_up(stack, workdir)
        runs = []
        for round_ in range(rounds):
            for connections in CONNECTIONS:
                for call in CALLS:
                    targets = targets_for(call)
                    for target in targets if round_ % 2 == 0 else reversed(targets):
                        progress(f"round {round_ + 1}/{rounds}: {call} {target} {connections} conn, {duration_s:g} s")
                        runs.append(measure(stack, call, target, connections, duration_s, workdir, round_))
        return runs, verified


# --- output -------------------------------------------------------------------------------


CALL_LABELS = {
    "refund": "refund (no redaction, body phases skipped)",
    "slack": "Slack post (request + response redacted)",
    "crm": "CRM read (response fields redacted)",
}


def comparisons(runs: list[Run]) -> dict[tuple[str, str, int], dict[str, float]]:
    """(target, call, connections) → the run against Envoy direct of the same round, for
    Aegis and the floor; with several rounds, the median of the rounds' figures."""
    direct = {(r.round, r.call, r.connections): r.result for r in runs if r.target == "direct"}
    per_round: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for run in runs:
        base = direct.get((run.round, run.call, run.connections))
        if run.target == "direct" or base is None or base.rps <= 0:
            continue
        a, d = run.result.latency_us, base.latency_us
        per_round.setdefault((run.target, run.call, run.connections), []).append(
            {
                "throughput_ratio": round(run.result.rps / base.rps, 3),
                "added_p50_ms": round((a["p50"] - d["p50"]) / 1000, 3),
                "added_p99_ms": round((a["p99"] - d["p99"]) / 1000, 3),
            }
        )
    return {key: _median_of(figures) for key, figures in per_round.items()}


def _median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    if len(rounds) == 1:
        return rounds[0]
    out = {name: round(statistics.median(r[name] for r in rounds), 3) for name in rounds[0]}
    out["rounds"] = len(rounds)
    return out


def summary_runs(runs: list[Run]) -> list[Run]:
    """One run per (call, target, connections) in first-seen order: itself with one round;
    with several, the medians of the rounds' RPS, percentiles, CPU and steal, the errors and Envoy's
    counters summed."""
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.call, run.target, run.connections), []).append(run)
    return [group[0] if len(group) == 1 else _median_run(group) for group in groups.values()]


def _median_run(group: list[Run]) -> Run:
    first = group[0]
    result = median_result([run.result for run in group])
    counters = summed_counters([run.counters for run in group])
    cpu = {role: statistics.median(run.cpu_us[role] for run in group) for role in first.cpu_us}
    steal_pct = statistics.median(run.steal_pct for run in group)
    return Run(first.call, first.target, first.connections, result, counters, cpu, -1, steal_pct)


def _per_request(run: Run, name: str) -> str:
    if not run.counters or not run.result.requests:
        return ""
    return f"{run.counters.get(name, 0) / run.result.requests:.2f}"


def _cpu(run: Run, role: str) -> str:
    value = run.cpu_us.get(role)
    return "" if value is None else f"{value:,.0f}"


TARGET_LABELS = {"direct": "Envoy direct", "floor": "Envoy → no-op Check + ext_proc", "aegis": "Envoy → Aegis"}


def table(runs: list[Run], compared: dict[tuple[str, str, int], dict[str, float]]) -> str:
    rows = [
        "| call | target | conn | RPS | P50 ms | P99 ms | P99.9 ms | errors | RPS vs direct | +P50 ms | +P99 ms "
        "| ext_proc msgs/req | Envoy CPU µs/req | service CPU µs/req |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in runs:
        lat = run.result.latency_us
        cells = [
            CALL_LABELS[run.call],
            TARGET_LABELS[run.target],
            str(run.connections),
        ]
        cells += [f"{run.result.rps:,.0f}"] + [f"{lat[k] / 1000:.2f}" for k in ("p50", "p99", "p999")]
        cells.append(str(run.result.error_count) + ("" if run.valid else " ⚠"))
        c = compared.get((run.target, run.call, run.connections))
        cells += (
            ["", "", ""]
            if c is None
            else [f"{c['throughput_ratio']:.2f}x", f"{c['added_p50_ms']:+.2f}", f"{c['added_p99_ms']:+.2f}"]
        )
        cells.append(_per_request(run, "ext_proc.stream_msgs_sent"))
        cells += [_cpu(run, "envoy"), _cpu(run, "service")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dlp_gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S:g} s runs instead of {DURATION_S:g} s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a deleted temp dir)")
    parser.add_argument("--envoy-concurrency", type=int, default=1, help="worker threads per Envoy (default 1)")
    parser.add_argument(
        "--transport", choices=TRANSPORTS, default=DEFAULT_TRANSPORT, help="Envoy → gRPC services (default unix)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="passes over every call and target, alternating their order; the table gives the rounds' medians",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _progress(line: str) -> None:
    print(f"[bench.dlp_gateway] {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = QUICK_DURATION_S if args.quick else DURATION_S
    raise_on_sigterm()
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="aegis-dlp-bench-") as tmp:
            workdir = (args.workdir or Path(tmp)).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
            runs, verified = run_all(duration, args.envoy_concurrency, workdir, _progress, args.transport, args.rounds)
    except BenchError as exc:
        print(f"bench.dlp_gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.dlp_gateway: interrupted; every started process was stopped", file=sys.stderr)
        return 130
    compared = comparisons(runs)
    print(table(summary_runs(runs), compared))
    report = {
        "command": "python -m bench.dlp_gateway " + " ".join(sys.argv[1:] if argv is None else argv),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "duration_s": duration,
        "rounds": args.rounds,
        "transport": args.transport,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "verified": verified,
        "runs": [r.to_json() for r in runs],
        "comparisons": [{"target": k[0], "call": k[1], "connections": k[2], **v} for k, v in compared.items()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0 if all(r.valid for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
