"""Telemetry overhead: the full gateway with telemetry off, the decision log on, and OTLP on.

``python -m bench.telemetry [--quick] [--out bench/out/telemetry.json]``

Starts on free loopback ports one fixed-response upstream Envoy and three Envoy → Aegis
gateways (``bench.stack`` helpers, ext_authz → router), identical but for telemetry:

* ``off``: no decision log, no OTLP (what ``bench.gateway`` measures);
* ``log``: the signed decision log written to a file (``audit.path``, Ed25519 checkpoints);
* ``otlp``: the decision log, plus ``telemetry.otlp_endpoint`` pointing at an OTLP/gRPC
  receiver this process runs: Envoy's spans, the service's decision spans and every
  decision-log entry as an OTLP log record (``telemetry.decision_log_otlp``, the default).

It checks each answers the allowed refund with the upstream's body, warms each up, then drives
them with wrk at 1 and 32 connections, the three variants back to back at each load, and
prints RPS, P50/P99, the ratio and the added latency against ``off`` measured in the same run,
the service's CPU per request, and what the receiver got (spans, log records) against what
the service says it exported and dropped.  Every process it started is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.gateway import _progress, _version, _workdir, machine
from bench.procs import BenchError, ProcessGroup, cpu_seconds, raise_on_sigterm
from bench.request import refund_request
from bench.result import LoadResult
from bench.stack import (
    AGENT,
    SCOPES,
    TENANT,
    TOKEN_TTL_S,
    TOOL_HOST,
    UPSTREAM_BODY,
    Target,
    loopback,
    start_envoy,
    start_service,
    upstream_bootstrap,
    write_aegis_config,
)
from bench.wrk import run_wrk, wrk_binary
from extauthz.audit.keys import generate
from extauthz.config import AegisConfig, load_config
from extauthz.devtokens import mint_token
from extauthz.envoyconfig import render_bootstrap
from extauthz.supervisor import envoy_binary

DEFAULT_OUT = Path("bench/out/telemetry.json")
VARIANTS = ("off", "log", "otlp")
LABELS = {"off": "telemetry off", "log": "decision log (file)", "otlp": "decision log + OTLP traces and logs"}
CONNECTIONS = (1, 32)
DURATION_S, QUICK_DURATION_S, MAX_DURATION_S = 8.0, 3.0, 10.0
WARMUP_S, QUICK_WARMUP_S = 2.0, 1.0
VERIFY_TIMEOUT_S = 10.0
DRAIN_S = 2.0  # batch processors export every 0.5 s: let the last batches arrive
COUNTERS = (
    "aegis_spans_exported_total",
    "aegis_spans_dropped_total",
    "aegis_decision_log_otlp_exported_total",
    "aegis_decision_log_otlp_dropped_total",
    "aegis_decision_log_blocked_total",
    "aegis_decisions_total",
)


# --- the OTLP receiver ----------------------------------------------------------------------


class Receiver(trace_service_pb2_grpc.TraceServiceServicer, logs_service_pb2_grpc.LogsServiceServicer):
    """An OTLP/gRPC collector that only counts: spans by service.name, log records."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: dict[str, int] = {}
        self.log_records = 0
        self.exports = 0

    def Export(self, request: Any, context: Any) -> Any:  # both services call their method Export
        with self.lock:
            self.exports += 1
            if isinstance(request, logs_service_pb2.ExportLogsServiceRequest):
                self.log_records += sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
                return logs_service_pb2.ExportLogsServiceResponse()
            for resource_spans in request.resource_spans:
                name = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), "?"
                )
                count = sum(len(s.spans) for s in resource_spans.scope_spans)
                self.spans[name] = self.spans.get(name, 0) + count
            return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"spans": dict(self.spans), "log_records": self.log_records, "exports": self.exports}


def start_receiver() -> tuple[grpc.Server, Receiver, str]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    address = loopback()
    if server.add_insecure_port(address) == 0:
        raise BenchError(f"cannot listen on {address} for the OTLP receiver")
    server.start()
    return server, receiver, address


# --- the gateways -----------------------------------------------------------------------------


@dataclass
class Gateway:
    """One variant: its config, its Envoy, the pids whose CPU time is read, its token."""

    variant: str
    config: AegisConfig
    target: Target
    token: str
    pids: dict[str, int] = field(default_factory=dict)


def variant_config(workdir: Path, upstream: str, variant: str, otlp: str) -> AegisConfig:
    """``bench.stack``'s aegis.yaml plus this variant's ``audit`` and ``telemetry`` sections."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_aegis_config(workdir, upstream)
    raw = yaml.safe_load(config.path.read_text(encoding="utf-8"))
    if variant in ("log", "otlp"):
        generate(workdir / "keys" / "audit.pem")
        raw["audit"] = {"path": str(workdir / "decisions.jsonl"), "signing_key": "keys/audit.pem"}
    if variant == "otlp":
        raw["telemetry"] = {"otlp_endpoint": otlp}
    config.path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_config(config.path)


def start_gateway(group: ProcessGroup, workdir: Path, upstream: str, variant: str, otlp: str) -> Gateway:
    config = variant_config(workdir, upstream, variant, otlp)
    start_service(group, config)
    bootstrap = render_bootstrap(config, with_ext_proc=False)
    start_envoy(group, "envoy", bootstrap, config.envoy.admin, envoy_binary(config), 1)
    token = mint_token(config.identity, agent=AGENT, tenant=TENANT, scopes=SCOPES, ttl_s=TOKEN_TTL_S)
    pids = {child.name: child.process.pid for child in group.children}
    target = Target(variant, config.envoy.listen, config.envoy.admin)
    return Gateway(variant, config, target, token, {"service": pids["aegis-service"], "envoy": pids["envoy"]})


def verify(gateway: Gateway) -> None:
    """The allowed refund must reach the upstream through this gateway (Envoy may still be
    health-checking the service at first); refuse to measure error pages."""
    request = refund_request(TOOL_HOST, gateway.token)
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while True:
        response = httpx.post(gateway.target.url + request.path, content=request.body, headers=request.headers)
        if response.status_code == 200 and response.text == UPSTREAM_BODY:
            return
        if time.monotonic() > deadline:
            raise BenchError(
                f"refusing to measure: {gateway.variant} answered {response.status_code} {response.text[:200]!r}"
            )
        time.sleep(0.2)


def service_counters(gateway: Gateway) -> dict[str, float]:
    """The service's export and decision-log counters, summed over labels."""
    text = httpx.get(f"http://{gateway.config.service.http}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in COUNTERS:
                key = sample.name
                if sample.name.endswith("dropped_total") and sample.labels.get("reason"):
                    key = f"{sample.name}{{reason={sample.labels['reason']}}}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


# --- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    variant: str
    connections: int
    result: LoadResult
    cpu_ms_per_request: dict[str, float]

    @property
    def valid(self) -> bool:
        return self.result.requests > 0 and self.result.error_count == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "connections": self.connections,
            "valid": self.valid,
            "cpu_ms_per_request": self.cpu_ms_per_request,
            **self.result.to_json(),
        }


def measure(gateway: Gateway, connections: int, duration_s: float, workdir: Path) -> Run:
    request = refund_request(TOOL_HOST, gateway.token)
    before = {name: cpu_seconds(pid) for name, pid in gateway.pids.items()}
    before["receiver"] = time.process_time()  # this process: the OTLP receiver's threads
    result = run_wrk(gateway.target.url, request, connections, duration_s, workdir)
    after = {name: cpu_seconds(pid) for name, pid in gateway.pids.items()}
    after["receiver"] = time.process_time()
    per_request = {name: round((after[name] - before[name]) * 1000 / max(1, result.requests), 4) for name in before}
    return Run(gateway.variant, connections, result, per_request)


@dataclass
class Outcome:
    runs: list[Run]
    receiver: dict[str, Any]
    counters: dict[str, dict[str, float]]
    versions: dict[str, str]
    decision_log_lines: dict[str, int]


def run_all(duration_s: float, warmup_s: float, workdir: Path, progress: Callable[[str], None]) -> Outcome:
    """Start everything, verify, warm up, measure; every process is stopped on the way out."""
    server, receiver, otlp = start_receiver()
    try:
        with ExitStack() as stack:
            progress("starting the upstream and three Envoy → Aegis gateways (off, log, otlp)")
            upstream = Target("upstream", loopback(), loopback())
            gateways = []
            for variant in VARIANTS:
                group = stack.enter_context(ProcessGroup(_mkdir(workdir / variant)))
                gateways.append(start_gateway(group, workdir / variant, upstream.listen, variant, otlp))
            binary = envoy_binary(gateways[0].config)
            base = stack.enter_context(ProcessGroup(_mkdir(workdir / "upstream")))
            bootstrap = upstream_bootstrap(upstream.listen, upstream.admin)
            start_envoy(base, "upstream", bootstrap, upstream.admin, binary, 1)
            for gateway in gateways:
                verify(gateway)
            progress("verified: each gateway answers the allowed refund with the upstream's body")
            for gateway in gateways:
                run_wrk(gateway.target.url, refund_request(TOOL_HOST, gateway.token), 32, warmup_s, workdir)
            runs = []
            for connections in CONNECTIONS:
                for gateway in gateways:
                    progress(f"{LABELS[gateway.variant]}, {connections} conn, {duration_s:g} s")
                    runs.append(measure(gateway, connections, duration_s, workdir))
            time.sleep(DRAIN_S)
            counters = {g.variant: service_counters(g) for g in gateways}
            lines = {g.variant: _count_lines(g.config.audit.path) for g in gateways if g.config.audit.path is not None}
            versions = {"envoy": _version([binary, "--version"]), "wrk": _version([wrk_binary(), "-v"])}
            return Outcome(runs, receiver.snapshot(), counters, versions, lines)
    finally:
        server.stop(None)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


# --- output -------------------------------------------------------------------------------


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def table(runs: list[Run]) -> str:
    """Markdown: one row per run; log and otlp rows against off at the same connections."""
    off = {r.connections: r.result for r in runs if r.variant == "off"}
    rows = [
        "| variant | conn | RPS | P50 ms | P99 ms | errors | RPS vs off | +P50 ms | +P99 ms "
        "| CPU ms/req: service | Envoy | receiver |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in runs:
        r, base = run.result, off.get(run.connections)
        cells = [LABELS[run.variant], str(run.connections), f"{r.rps:,.0f}"]
        cells += [_ms(r.latency_us["p50"]), _ms(r.latency_us["p99"]), str(r.error_count) + ("" if run.valid else " ⚠")]
        if run.variant == "off" or base is None or base.rps <= 0:
            cells += ["", "", ""]
        else:
            cells += [
                f"{r.rps / base.rps:.2f}x",
                f"{(r.latency_us['p50'] - base.latency_us['p50']) / 1000:+.2f}",
                f"{(r.latency_us['p99'] - base.latency_us['p99']) / 1000:+.2f}",
            ]
        cells += [f"{run.cpu_ms_per_request[k]:.3f}" for k in ("service", "envoy", "receiver")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def delivery(outcome: Outcome) -> str:
    """What the receiver got against what the otlp service says it made, exported, dropped."""
    otlp = outcome.counters.get("otlp", {})
    spans = outcome.receiver["spans"]
    parts = [
        f"receiver: {spans.get('aegis', 0):,} service spans, {spans.get('envoy-aegis', 0):,} Envoy spans, "
        f"{outcome.receiver['log_records']:,} log records",
        f"otlp service: {otlp.get('aegis_decisions_total', 0):,.0f} decisions, "
        f"spans exported {otlp.get('aegis_spans_exported_total', 0):,.0f} / dropped "
        f"{_sum_prefix(otlp, 'aegis_spans_dropped_total'):,.0f}, "
        f"log records exported {otlp.get('aegis_decision_log_otlp_exported_total', 0):,.0f} / dropped "
        f"{_sum_prefix(otlp, 'aegis_decision_log_otlp_dropped_total'):,.0f}",
        "decision-log lines: " + ", ".join(f"{k} {v:,}" for k, v in outcome.decision_log_lines.items()),
    ]
    return "\n".join(parts)


def _sum_prefix(counters: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in counters.items() if k.startswith(prefix))


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, float, float]:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S:g} s runs instead of {DURATION_S:g} s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--duration", type=float, help=f"seconds per run (at most {MAX_DURATION_S:g})")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a deleted temp dir)")
    args = parser.parse_args(argv)
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    if not 0 < duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:g}]")
    return args, duration, QUICK_WARMUP_S if args.quick else WARMUP_S


def main(argv: list[str] | None = None) -> int:
    args, duration, warmup = parse_args(argv)
    raise_on_sigterm()
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        with _workdir(args.workdir) as workdir:
            outcome = run_all(duration, warmup, workdir, _progress)
    except BenchError as exc:
        print(f"bench.telemetry: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.telemetry: interrupted; every started process was stopped", file=sys.stderr)
        return 130
    print(table(outcome.runs))
    print()
    print(delivery(outcome))
    report = {
        "command": "python -m bench.telemetry " + shlex.join(sys.argv[1:] if argv is None else argv),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "settings": {"duration_s": duration, "warmup_s": warmup, "connections": list(CONNECTIONS)},
        "versions": outcome.versions,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "runs": [r.to_json() for r in outcome.runs],
        "receiver": outcome.receiver,
        "service_counters": outcome.counters,
        "decision_log_lines": outcome.decision_log_lines,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} ({report['elapsed_s']:g} s)", file=sys.stderr)
    invalid = [r for r in outcome.runs if not r.valid]
    for r in invalid:
        print(f"bench.telemetry: {r.variant}, {r.connections} conn: errors {r.result.errors}", file=sys.stderr)
    return 1 if invalid else 0


if __name__ == "__main__":
    raise SystemExit(main())
