"""Replicas: the full gateway with 1, 2 and 3 service replicas on a Redis store, against Envoy alone.

``python -m bench.replicas [--quick] [--out bench/out/replicas.json]``

Starts on free loopback ports, all at once and each waited for until ready:

* ``upstream``: the fixed-response Envoy of ``bench.stack`` (stands in for the tool server);
* ``redis``: Debian's ``redis-server`` (no persistence), shared by the gateways (one db each);
* ``r1``, ``r2``, ``r3``: three gateways started the way ``aegis up --replicas N`` starts them
  (``extauthz.supervisor.start_stack``: N service processes, then one Envoy with one endpoint per
  replica in ``aegis_grpc``, LEAST_REQUEST, gRPC health checks), ``store: redis://…`` and a shared
  ``approvals.signing_key`` as N > 1 requires, the repo's policies;
* ``direct``: Envoy with the same generated bootstrap minus ext_authz (``bench.stack``), with as
  many worker threads as the gateways' Envoy (which ``start_stack`` leaves at Envoy's default).

It refuses to measure unless direct answers the allowed refund with the upstream's body, and
every gateway does too (200), answers 403 to a refund of 900 and 401 without a token, and has
every replica healthy in Envoy.  Then, after a short warm-up per target, wrk at 1 and at 32
connections, the four targets back to back at each load.  Per run it also records Envoy's
ext_authz counters, how many Checks each replica got (Envoy's per-endpoint ``rq_total``) and the
CPU time of the service processes, their Envoy, wrk's share of the machine.  Prints a table with
RPS, P50/P99/P99.9, the ratio against direct and against 1 replica (same load, same run), and
writes JSON.  Everything it started is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from bench.gateway import _expect, _expect_eventually, _progress, _version, _workdir, ext_authz_counters, machine
from bench.procs import BenchError, ProcessGroup, cpu_seconds, raise_on_sigterm
from bench.request import DENIED_AMOUNT, refund_request
from bench.result import LoadResult
from bench.stack import (
    AGENT,
    SCOPES,
    TENANT,
    TOKEN_TTL_S,
    TOOL_HOST,
    UPSTREAM_BODY,
    Target,
    direct_bootstrap,
    loopback,
    start_envoy,
    upstream_bootstrap,
    write_aegis_config,
)
from bench.wrk import run_wrk, wrk_binary
from extauthz.config import AegisConfig, load_config
from extauthz.devtokens import mint_token
from extauthz.envoyconfig import GRPC_CLUSTER
from extauthz.ports import free_loopback_port
from extauthz.supervisor import REPLICA_PORT_STEP, Stack, envoy_binary, replicas_of, start_stack

DEFAULT_OUT = Path("bench/out/replicas.json")
REPLICA_COUNTS = (1, 2, 3)
CONNECTIONS = (1, 32)
DURATION_S, QUICK_DURATION_S = 8.0, 3.0
WARMUP_S, QUICK_WARMUP_S = 2.0, 1.0
WARMUP_CONNECTIONS = 32
HEALTHY_TIMEOUT_S = 15.0


# --- configuration --------------------------------------------------------------------------


def replica_service_ports(replicas: int, taken: set[int]) -> dict[str, str]:
    """grpc/http/ext_proc addresses whose ``+ REPLICA_PORT_STEP·i`` ports (i < replicas) are free
    and collide with nothing in ``taken`` (which is updated)."""
    for _ in range(200):
        base = [free_loopback_port() for _ in range(3)]
        ports = {p + REPLICA_PORT_STEP * i for p in base for i in range(replicas)}
        if len(ports) == 3 * replicas and not ports & taken and all(_port_free(p) for p in ports):
            taken.update(ports)
            return {k: f"127.0.0.1:{p}" for k, p in zip(("grpc", "http", "ext_proc"), base, strict=True)}
    raise BenchError(f"no free loopback ports for {replicas} replicas")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def replica_config(
    directory: Path,
    upstream: str,
    redis_url: str,
    replicas: int,
    taken: set[int],
    hosts: tuple[str, ...] = (TOOL_HOST,),
) -> AegisConfig:
    """The benchmark's aegis.yaml (``bench.stack.write_aegis_config``) moved to a Redis store, with
    one override-token key for all replicas and service ports that leave room for ``replicas``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_aegis_config(directory, upstream, hosts=hosts).path
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["service"] = replica_service_ports(replicas, taken)
    raw["store"] = redis_url
    raw["approvals"] = {"signing_key": "keys/override.pem"}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_config(path)
    replicas_of(config, replicas)  # the supervisor's own checks: Redis store, signing key
    return config


# --- processes --------------------------------------------------------------------------------


def start_redis(group: ProcessGroup) -> int:
    """Debian's redis-server on a free loopback port, no persistence; its port once it answers."""
    port = free_loopback_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    child = group.spawn("redis", argv)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return port
            except redis.ConnectionError:
                if child.process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"redis-server did not start on port {port}:\n{child.log_tail()}") from None
                time.sleep(0.05)
    finally:
        client.close()


@dataclass
class Gateway:
    """One ``start_stack`` gateway: N replicas behind one Envoy."""

    replicas: int
    config: AegisConfig
    stack: Stack
    target: Target
    endpoints: list[str]  # the replicas' gRPC addresses, as Envoy names its hosts
    token: str  # each gateway has dev keys of its own

    @property
    def service_pids(self) -> list[int]:
        return [c.process.pid for c in self.stack.children if c.name.startswith("aegis")]

    @property
    def envoy_pid(self) -> int:
        return next(c.process.pid for c in self.stack.children if c.name == "envoy")


def start_gateway(directory: Path, upstream: str, redis_url: str, replicas: int, taken: set[int]) -> Gateway:
    config = replica_config(directory, upstream, redis_url, replicas, taken)
    try:
        stack = start_stack(config, config.path, replicas=replicas, with_demo_tools=False, log_dir=directory / "logs")
    except Exception as exc:  # SupervisorError, OSError: a child failed or a port was taken
        raise BenchError(f"cannot start {replicas} replica(s): {exc} (logs in {directory / 'logs'})") from exc
    target = Target(f"r{replicas}", config.envoy.listen, config.envoy.admin)
    endpoints = [r.grpc for r in replicas_of(config, replicas)]
    token = mint_token(config.identity, agent=AGENT, tenant=TENANT, scopes=SCOPES, ttl_s=TOKEN_TTL_S)
    return Gateway(replicas, config, stack, target, endpoints, token)


def envoy_concurrency(admin: str) -> int:
    """How many worker threads an Envoy runs (``/server_info``)."""
    info = httpx.get(f"http://{admin}/server_info", timeout=5.0).json()
    return int(info["command_line_options"]["concurrency"])


# --- Envoy's per-endpoint view ----------------------------------------------------------------


def parse_clusters(text: str, cluster: str = GRPC_CLUSTER) -> dict[str, dict[str, str]]:
    """``/clusters`` admin output (``name::host::stat::value`` lines) → {host: {stat: value}}."""
    hosts: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster:
            hosts.setdefault(parts[1], {})[parts[2]] = parts[3]
    return hosts


def endpoint_stats(target: Target) -> dict[str, dict[str, str]]:
    return parse_clusters(httpx.get(f"http://{target.admin}/clusters", timeout=5.0).text)


def wait_all_healthy(gateway: Gateway) -> None:
    """Every replica must be a healthy ``aegis_grpc`` endpoint, or the run would measure fewer."""
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while True:
        hosts = endpoint_stats(gateway.target)
        unhealthy = [e for e in gateway.endpoints if hosts.get(e, {}).get("health_flags") != "healthy"]
        if not unhealthy:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"refusing to measure: {gateway.target.name} endpoints not healthy in Envoy: {unhealthy}")
        time.sleep(0.2)


def checks_per_replica(
    before: dict[str, dict[str, str]], after: dict[str, dict[str, str]], endpoints: Sequence[str]
) -> list[int]:
    """Check calls Envoy sent to each replica between two ``/clusters`` snapshots."""

    def total(hosts: dict[str, dict[str, str]], endpoint: str) -> int:
        return int(hosts.get(endpoint, {}).get("rq_total", "0"))

    return [total(after, e) - total(before, e) for e in endpoints]


# --- verification ----------------------------------------------------------------------------


def verify(direct: Target, gateways: Sequence[Gateway]) -> None:
    """Refuse to benchmark error pages, or fewer replicas than the label says."""
    _expect(direct, refund_request(TOOL_HOST, gateways[0].token), 200, "the allowed refund", UPSTREAM_BODY)
    for g in gateways:
        _expect_eventually(g.target, refund_request(TOOL_HOST, g.token), "the allowed refund")
        _expect(g.target, refund_request(TOOL_HOST, g.token, DENIED_AMOUNT), 403, "a refund of 900")
        _expect(g.target, refund_request(TOOL_HOST, None), 401, "a refund without a token")
        wait_all_healthy(g)


# --- measuring ---------------------------------------------------------------------------------


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class Run:
    """One wrk run against one target, with what the gateway's processes did meanwhile."""

    target: str  # "direct" or "r1", "r2", "r3"
    replicas: int  # 0 for direct
    connections: int
    result: LoadResult
    checks: dict[str, int] = field(default_factory=dict)  # Envoy ext_authz counters (delta)
    per_replica: list[int] = field(default_factory=list)  # Checks Envoy sent to each replica
    service_cores: float = 0.0  # CPU seconds of all service replicas / wall seconds
    envoy_cores: float = 0.0
    machine_busy: float = 0.0  # fraction of all cores busy over the run

    @property
    def valid(self) -> bool:
        return self.result.requests > 0 and self.result.error_count == 0

    @property
    def label(self) -> str:
        return (
            "Envoy direct"
            if not self.replicas
            else f"Envoy → Aegis, {self.replicas} replica" + "s" * (self.replicas > 1)
        )

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "result"}
        return {**out, "valid": self.valid, **self.result.to_json()}


def measure(
    target: Target, gateway: Gateway | None, connections: int, token: str, duration_s: float, workdir: Path
) -> Run:
    request = refund_request(TOOL_HOST, token)
    if gateway is None:
        busy0, total0 = _machine_ticks()
        result = run_wrk(target.url, request, connections, duration_s, workdir)
        busy1, total1 = _machine_ticks()
        return Run("direct", 0, connections, result, machine_busy=(busy1 - busy0) / max(1, total1 - total0))
    pids = [*gateway.service_pids, gateway.envoy_pid]
    counters, hosts = ext_authz_counters(target), endpoint_stats(target)
    cpu0 = [cpu_seconds(p) for p in pids]
    busy0, total0 = _machine_ticks()
    wall0 = time.monotonic()
    result = run_wrk(target.url, request, connections, duration_s, workdir)
    wall = time.monotonic() - wall0
    busy1, total1 = _machine_ticks()
    cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
    after = ext_authz_counters(target)
    return Run(
        target.name,
        gateway.replicas,
        connections,
        result,
        checks={k: v - counters.get(k, 0) for k, v in after.items() if v - counters.get(k, 0)},
        per_replica=checks_per_replica(hosts, endpoint_stats(target), gateway.endpoints),
        service_cores=sum(cpu[:-1]) / wall,
        envoy_cores=cpu[-1] / wall,
        machine_busy=(busy1 - busy0) / max(1, total1 - total0),
    )


@dataclass
class Outcome:
    runs: list[Run]
    context: dict[str, Any]


def run_all(duration_s: float, warmup_s: float, workdir: Path, progress: Callable[[str], None]) -> Outcome:
    """Start everything, verify, warm up, then each load level's four targets back to back."""
    with ProcessGroup(workdir) as group, ExitStack() as stacks:
        progress("starting redis-server")
        redis_port = start_redis(group)
        upstream = Target("upstream", loopback(), loopback())
        taken: set[int] = set()
        gateways: list[Gateway] = []
        for n in REPLICA_COUNTS:
            progress(f"starting the gateway with {n} replica(s) (extauthz.supervisor.start_stack)")
            gateway = start_gateway(workdir / f"r{n}", upstream.listen, f"redis://127.0.0.1:{redis_port}/{n}", n, taken)
            stacks.callback(gateway.stack.stop)
            gateways.append(gateway)
        binary = envoy_binary(gateways[0].config)
        workers = envoy_concurrency(gateways[0].target.admin)
        progress(f"starting the upstream Envoy and Envoy direct ({workers} workers, as the gateways' Envoy)")
        start_envoy(group, "upstream", upstream_bootstrap(upstream.listen, upstream.admin), upstream.admin, binary, 1)
        direct = Target("direct", loopback(), loopback())
        boot = direct_bootstrap(gateways[0].config, direct.listen, direct.admin, workdir / "direct-access.log")
        start_envoy(group, "direct", boot, direct.admin, binary, workers)
        verify(direct, gateways)
        progress(
            "verified: direct 200; every gateway 200 (allowed), 403 (amount 900), 401 (no token), replicas healthy"
        )
        targets: list[tuple[Target, Gateway | None, str]] = [(direct, None, gateways[0].token)]
        targets += [(g.target, g, g.token) for g in gateways]
        for target, _, token in targets:
            run_wrk(target.url, refund_request(TOOL_HOST, token), WARMUP_CONNECTIONS, warmup_s, workdir)
        runs = []
        for connections in CONNECTIONS:
            for target, measured, token in targets:
                progress(f"{target.name}, {connections} conn, {duration_s:g} s")
                runs.append(measure(target, measured, connections, token, duration_s, workdir))
        versions = {"envoy": _version([binary, "--version"]), "wrk": _version([wrk_binary(), "-v"])}
        versions["redis"] = _version(["redis-server", "--version"])
        return Outcome(runs, {"versions": versions, "envoy_workers": workers})


# --- output ------------------------------------------------------------------------------------


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def ratios(runs: Sequence[Run]) -> dict[tuple[str, int], tuple[float | None, float | None]]:
    """(RPS vs direct, RPS vs 1 replica) per (target, connections), from the same run."""
    base = {(r.replicas, r.connections): r.result.rps for r in runs}
    out: dict[tuple[str, int], tuple[float | None, float | None]] = {}
    for r in runs:
        direct, one = base.get((0, r.connections)), base.get((1, r.connections))
        vs_direct = r.result.rps / direct if r.replicas and direct else None
        vs_one = r.result.rps / one if r.replicas and one else None
        out[(r.target, r.connections)] = (vs_direct, vs_one)
    return out


def table(runs: Sequence[Run]) -> str:
    header = (
        "| target | conn | RPS | P50 ms | P99 ms | P99.9 ms | errors | RPS vs direct | RPS vs 1 replica "
        "| Checks per replica | service cores | Envoy cores | machine busy |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--|--:|--:|--:|"
    )
    rows = [header]
    by = ratios(runs)
    for r in runs:
        lat = r.result.latency_us
        vs_direct, vs_one = by[(r.target, r.connections)]
        total = sum(r.per_replica)
        share = " / ".join(f"{100 * n / total:.0f} %" for n in r.per_replica) if total and r.replicas > 1 else ""
        cells = [
            r.label,
            str(r.connections),
            f"{r.result.rps:,.0f}",
            _ms(lat["p50"]),
            _ms(lat["p99"]),
            _ms(lat["p999"]),
        ]
        cells.append(str(r.result.error_count) + ("" if r.valid else " ⚠"))
        cells += [f"{vs_direct:.2f}x" if vs_direct else "", f"{vs_one:.2f}x" if vs_one else "", share]
        cells += [f"{r.service_cores:.2f}" if r.replicas else "", f"{r.envoy_cores:.2f}" if r.replicas else ""]
        cells.append(f"{100 * r.machine_busy:.0f} %")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def report(outcome: Outcome, duration_s: float, warmup_s: float, context: dict[str, Any]) -> dict[str, Any]:
    by = ratios(outcome.runs)
    runs = []
    for r in outcome.runs:
        vs_direct, vs_one = by[(r.target, r.connections)]
        runs.append({**r.to_json(), "rps_vs_direct": vs_direct, "rps_vs_1_replica": vs_one})
    return {
        "command": "python -m bench.replicas " + shlex.join(sys.argv[1:]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {"duration_s": duration_s, "warmup_s": warmup_s, "connections": list(CONNECTIONS)},
        **outcome.context,
        **context,
        "runs": runs,
    }


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, float, float]:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S:g} s runs instead of {DURATION_S:g} s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--duration", type=float, help=f"seconds per run (at most {DURATION_S:g})")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a deleted temp dir)")
    args = parser.parse_args(argv)
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    if not 0 < duration <= DURATION_S:
        parser.error(f"--duration must be in (0, {DURATION_S:g}]")
    return args, duration, QUICK_WARMUP_S if args.quick else WARMUP_S


def main(argv: list[str] | None = None) -> int:
    args, duration_s, warmup_s = parse_args(argv)
    raise_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    load_before, started = os.getloadavg(), time.monotonic()
    try:
        with _workdir(args.workdir) as workdir:
            outcome = run_all(duration_s, warmup_s, workdir, _progress)
    except BenchError as exc:
        print(f"bench.replicas: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.replicas: interrupted; every started process was stopped", file=sys.stderr)
        return 130
    print(table(outcome.runs))
    context = {
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report(outcome, duration_s, warmup_s, context), indent=2) + "\n")
    print(f"\nwrote {args.out} ({context['wall_s']} s)", file=sys.stderr)
    invalid = [r for r in outcome.runs if not r.valid]
    for r in invalid:
        print(
            f"bench.replicas: {r.label}, {r.connections} conn: errors {r.result.errors}, ext_authz {r.checks}",
            file=sys.stderr,
        )
    return 1 if invalid else 0


if __name__ == "__main__":
    raise SystemExit(main())
