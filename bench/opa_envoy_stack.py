"""The processes of the Aegis vs OPA-Envoy comparison, on free loopback ports.

* ``upstream``: the fixed-response Envoy of ``bench.stack`` (the refund's small JSON; the
  ~2 KB support ticket with PII for ``/tenants/...``, the CRM read).
* ``direct``: Envoy with the generated bootstrap minus authorisation (``bench.stack``).
* ``aegis``: Envoy with the generated bootstrap without ext_proc (ext_authz → router), in
  front of ``aegis serve`` with the repo's policies: the like-for-like with OPA-Envoy.
* ``aegis_dlp``: Envoy with the full generated bootstrap (ext_authz → ext_proc → router) in
  front of the same service process: the CRM read's response is redacted.
* With ``aegis_replicas`` N > 1, N ``aegis serve`` processes (the listeners ``aegis up
  --replicas N`` gives them, a shared Redis, one override-token key) are the endpoints of
  both Aegis Envoys: the way Aegis uses more than one core, as OPA's Go runtime does.
* ``opa_envoy``: Envoy with the *same* generated bootstrap as ``aegis`` — same listener,
  ext_authz filter (body sent as bytes, fail closed, 1 s timeout, retry policy), gRPC
  cluster options — whose gRPC cluster points to ``opa-envoy-plugin`` instead, without the
  active gRPC health check (the plugin serves no ``grpc.health.v1``); the plugin evaluates
  ``bench/opa_envoy/policy.rego`` with the service's public key, issuer and audience as data.

Every Envoy runs the same binary with the same worker count.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from bench.dlp_gateway import full_bootstrap
from bench.policygen import AGENT as POLICY_AGENT
from bench.policygen import TENANT as POLICY_TENANT
from bench.policygen import Call, allowed_call, sample_calls, write_policy_dir
from bench.policygen import scopes as policy_scopes
from bench.procs import BenchError, Child, ProcessGroup, total_cpu_seconds, wait_ready
from bench.replicas import replica_config, start_redis
from bench.stack import (
    DEFAULT_TRANSPORT,
    REPO,
    TOOL_HOST,
    Target,
    direct_bootstrap,
    grpc_listen,
    loopback,
    moved_config,
    start_envoy,
    upstream_bootstrap,
    write_aegis_config,
)
from bench.ticket import ticket_json
from extauthz.config import AegisConfig
from extauthz.config_fields import socket_path
from extauthz.devtokens import load_signing_key, mint_token
from extauthz.envoyconfig import GRPC_CLUSTER, render_bootstrap
from extauthz.supervisor import Replica, envoy_binary, replicas_of

POLICY_DIR = REPO / "bench" / "opa_envoy"
POLICY_FILE = POLICY_DIR / "policy.rego"
RESULT_QUERY = "aegis/opa_envoy/result"  # the plugin's `path`: data.aegis.opa_envoy.result
CRM_HOST = "crm.demo"
CRM_TENANT_PATH = "/tenants/"
AGENT, TENANT = "bench-bot", "acme"
SCOPES = ("payments.refund", "crm.get_record")
TOKEN_TTL_S = 1800
JWT_CACHE_ENTRIES = 10_000
SYSTEMS = ("opa_envoy", "aegis", "aegis_dlp")


def opa_envoy_binary() -> str:
    """``.tools/bin/opa-envoy-plugin`` (scripts/install-opa-envoy.sh) or one on PATH."""
    local = REPO / ".tools" / "bin" / "opa-envoy-plugin"
    found = str(local) if local.exists() else shutil.which("opa-envoy-plugin")
    if found is None:
        raise BenchError("opa-envoy-plugin not found: run scripts/install-opa-envoy.sh")
    return found


def opa_envoy_version() -> str:
    """The plugin tag the install script built (its stamp file), or ''."""
    stamp = REPO / ".tools" / "bin" / "opa-envoy-plugin.version"
    return stamp.read_text(encoding="utf-8").strip() if stamp.exists() else ""


# --- OPA-Envoy configuration --------------------------------------------------------------


def identity_data(config: AegisConfig) -> dict[str, Any]:
    """``data.bench_identity``: what Aegis verifies tokens against, for ``io.jwt.decode_verify``."""
    identity = config.identity
    if not identity.public_keys or identity.dev_signing_key is None:
        raise BenchError("the bench config needs a dev key pair")
    curve = load_signing_key(identity.dev_signing_key).curve.name
    alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[curve]
    return {
        "bench_identity": {
            "cert": identity.public_keys[0].read_text(encoding="utf-8"),
            "alg": alg,
            "issuer": identity.issuer,
            "audience": identity.audience,
            "max_lifetime_s": identity.max_lifetime_s,
            "leeway_s": identity.leeway_s,
        }
    }


def plugin_config(grpc_addr: str) -> dict[str, Any]:
    """opa-envoy-plugin's config: the ext_authz gRPC server and no decision log (defaults).

    OPA's verified-JWT cache (``io_jwt``, off by default) is asked for, as Aegis caches
    verified tokens, but v1.14.1 of the plugin never creates the inter-query value cache it
    lives in (``internal.go`` leaves ``interQueryValueCache`` nil), so it has no effect there:
    every Check verifies the ES256 signature.  Kept so a plugin that wires it gets it.
    """
    return {
        "plugins": {"envoy_ext_authz_grpc": {"addr": grpc_addr, "path": RESULT_QUERY}},
        "caching": {"inter_query_builtin_value_cache": {"named": {"io_jwt": {"max_num_entries": JWT_CACHE_ENTRIES}}}},
    }


def opa_envoy_bootstrap(config: AegisConfig, target: Target, access_log: Path, opa_grpc: str) -> dict[str, Any]:
    """The bootstrap ``aegis`` runs, on other ports, with the gRPC cluster on the plugin."""
    moved = moved_config(config, target, access_log)
    bootstrap = render_bootstrap(moved, service_endpoints=[opa_grpc], with_ext_proc=False)
    clusters = bootstrap["static_resources"]["clusters"]
    (grpc,) = [c for c in clusters if c["name"] == GRPC_CLUSTER]
    grpc.pop("health_checks", None)  # no grpc.health.v1 in the plugin: the check would fail it
    return bootstrap


def start_opa_envoy_plugin(
    group: ProcessGroup, workdir: Path, config: AegisConfig, transport: str = DEFAULT_TRANSPORT
) -> tuple[str, Child]:
    """The plugin (its HTTP API on a free port, ext_authz gRPC on another port or a Unix
    socket, as Aegis's), once healthy; returns the gRPC address as Envoy's endpoint."""
    grpc_addr, http_addr = grpc_listen(workdir, "opa-envoy", transport), loopback()
    data = workdir / "opa-envoy-data.json"
    data.write_text(json.dumps(identity_data(config)), encoding="utf-8")
    cfg = workdir / "opa-envoy.yaml"
    path = socket_path(grpc_addr)
    # The plugin takes a socket as a URL (unix:///path), Envoy as a pipe (unix:PATH here).
    plugin_addr = f"unix://{path}" if path is not None else grpc_addr
    cfg.write_text(yaml.safe_dump(plugin_config(plugin_addr)), encoding="utf-8")
    argv = [opa_envoy_binary(), "run", "--server", "--addr", http_addr, "--log-level", "error"]
    argv += ["--config-file", str(cfg), str(POLICY_FILE), str(data)]
    child = group.spawn("opa-envoy-plugin", argv)
    # ?plugins: 200 only once the ext_authz plugin reports OK (its gRPC server listening).
    wait_ready(child, f"http://{http_addr}/health?plugins", lambda r: r.status_code == 200)
    return grpc_addr, child


# --- the stack ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonStack:
    """The targets, the agent token, and the process ids behind each target."""

    upstream: Target
    direct: Target
    aegis: Target
    aegis_dlp: Target
    opa_envoy: Target
    token: str
    envoy_binary: str
    config: AegisConfig
    # target name → {"envoy": (pid,), "decider": (pid, …)}; the decider is the service
    # process(es) or the plugin.
    pids: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    all_pids: tuple[int, ...] = ()  # every process started, upstream included

    def target(self, name: str) -> Target:
        found: Target = getattr(self, name)
        return found


def start_services(group: ProcessGroup, config: AegisConfig, replicas: list[Replica]) -> tuple[int, ...]:
    """``aegis serve`` once per replica, each once ready (the first creates the shared keys)."""
    pids = []
    for replica in replicas:
        name = "aegis-service" if replica.index == 0 else f"aegis-service-{replica.index}"
        argv = [sys.executable, "-m", "extauthz.cli", "serve", "-c", str(config.path)]
        child = group.spawn(name, argv, cwd=REPO, env=replica.env)
        wait_ready(child, f"http://{replica.http}/readyz", lambda r: r.status_code == 200)
        pids.append(child.process.pid)
    return tuple(pids)


def start_comparison_stack(
    group: ProcessGroup,
    workdir: Path,
    envoy_concurrency: int,
    aegis_replicas: int = 1,
    transport: str = DEFAULT_TRANSPORT,
) -> ComparisonStack:
    """Start everything once ready; ``group`` stops it all when its ``with`` block ends.
    Envoy reaches Aegis and the plugin the same way (``transport``); replicas listen on
    ports (``bench.replicas``), so with several the plugin does too."""
    upstream = Target("upstream", loopback(), loopback())
    hosts = (TOOL_HOST, CRM_HOST)
    if aegis_replicas > 1:
        redis_url = f"redis://127.0.0.1:{start_redis(group)}/0"
        config = replica_config(workdir, upstream.listen, redis_url, aegis_replicas, set(), hosts=hosts)
        transport = "tcp"
    else:
        config = write_aegis_config(workdir, upstream.listen, hosts=hosts, transport=transport)
    replicas = replicas_of(config, aegis_replicas)
    grpc_endpoints, proc_endpoints = [r.grpc for r in replicas], [r.ext_proc for r in replicas]
    direct = Target("direct", loopback(), loopback())
    aegis = Target("aegis", config.envoy.listen, config.envoy.admin)
    aegis_dlp = Target("aegis_dlp", loopback(), loopback())
    opa = Target("opa_envoy", loopback(), loopback())
    binary = envoy_binary(config)

    def envoy(target: Target, bootstrap: dict[str, Any], workers: int = envoy_concurrency) -> None:
        start_envoy(group, target.name, bootstrap, target.admin, binary, workers)

    try:
        envoy(upstream, upstream_bootstrap(upstream.listen, upstream.admin, {CRM_TENANT_PATH: ticket_json()}), 1)
        envoy(direct, direct_bootstrap(config, direct.listen, direct.admin, workdir / "direct.log"))
        services = start_services(group, config, replicas)
        envoy(aegis, render_bootstrap(config, with_ext_proc=False, service_endpoints=grpc_endpoints))
        moved = moved_config(config, aegis_dlp, workdir / "aegis_dlp.log")
        envoy(aegis_dlp, full_bootstrap(moved, grpc_endpoints, proc_endpoints))
        opa_grpc, _ = start_opa_envoy_plugin(group, workdir, config, transport)
        envoy(opa, opa_envoy_bootstrap(config, opa, workdir / "opa_envoy.log", opa_grpc))
    except OSError as exc:
        raise BenchError(f"cannot start the stack: {exc}") from exc
    token = mint_token(config.identity, agent=AGENT, tenant=TENANT, scopes=SCOPES, ttl_s=TOKEN_TTL_S)
    pids = {
        "direct": {"envoy": (group.pid("direct"),)},
        "aegis": {"envoy": (group.pid("aegis"),), "decider": services},
        "aegis_dlp": {"envoy": (group.pid("aegis_dlp"),), "decider": services},
        "opa_envoy": {"envoy": (group.pid("opa_envoy"),), "decider": (group.pid("opa-envoy-plugin"),)},
    }
    every = tuple(c.process.pid for c in group.children)
    return ComparisonStack(upstream, direct, aegis, aegis_dlp, opa, token, binary, config, pids, every)


# --- /proc ----------------------------------------------------------------------------------


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine (all cores) from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def settle(pids: tuple[int, ...], quiet_cores: float, timeout_s: float, window_s: float = 0.5) -> float:
    """Wait until ``pids`` together use less than ``quiet_cores`` over a window (an overloaded
    run can leave queued Checks behind that would eat into the next run); the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        before = total_cpu_seconds(pids)
        time.sleep(window_s)
        if (total_cpu_seconds(pids) - before) / window_s < quiet_cores:
            break
    return round(time.monotonic() - start, 1)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of ``pid``, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (e.g. the service's policy-build worker)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text(encoding="ascii").split()
            found += [int(c) for c in children]
            todo += [int(c) for c in children]
    return found


def tree_memory(pid: int) -> dict[str, Any]:
    """RSS of ``pid`` alone and of its whole process tree, in MB."""
    own = memory_kb(pid)
    rss_tree = own["VmRSS"] + sum(memory_kb(c).get("VmRSS", 0) for c in descendants(pid))
    return {
        "rss_mb": round(own["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(own["VmHWM"] / 1024, 1),
        "tree_rss_mb": round(rss_tree / 1024, 1),
        "processes": 1 + len(descendants(pid)),
    }


# --- Aegis with the 200-rule policy: memory -------------------------------------------------


def _check_request(call: Call, token: str) -> external_auth_pb2.CheckRequest:
    headers = {**call.headers, "authorization": f"Bearer {token}"}
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="POST", host=call.host, path=call.path, headers=headers, raw_body=call.body_bytes()
    )
    request = attribute_context_pb2.AttributeContext.Request(http=http)
    return external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(request=request))


def generated_policy_memory(group: ProcessGroup, workdir: Path, rules: int, checks: int) -> dict[str, Any]:
    """RSS of ``aegis serve`` on ``bench.policygen``'s ``rules``-rule policy: once ready, and
    after ``checks`` gRPC Checks cycling through the generator's sample calls (every effect)."""
    home = workdir / f"policy{rules}-service"
    home.mkdir(parents=True, exist_ok=True)
    policy_dir = write_policy_dir(home / "policies", rules)
    config = write_aegis_config(home, "127.0.0.1:9", policy_dir=policy_dir)
    child = group.spawn(
        f"aegis-service-{rules}-rules",
        [sys.executable, "-m", "extauthz.cli", "serve", "-c", str(config.path)],
        cwd=REPO,
    )
    wait_ready(child, f"http://{config.service.http}/readyz", lambda r: r.status_code == 200)
    pid = child.process.pid
    ready = tree_memory(pid)
    token = mint_token(config.identity, agent=POLICY_AGENT, tenant=POLICY_TENANT, scopes=policy_scopes(), ttl_s=600)
    requests = [_check_request(c, token) for c in [allowed_call(), *sample_calls()]]
    answers: dict[int, int] = {}
    # Over a socket grpcio's default authority is its path, which HTTP/2 servers refuse.
    with grpc.insecure_channel(config.service.grpc, options=[("grpc.default_authority", "localhost")]) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for i in range(checks):
            code = stub.Check(requests[i % len(requests)], timeout=5.0).status.code
            answers[code] = answers.get(code, 0) + 1
    if not answers.get(0):
        raise BenchError(f"the {rules}-rule service allowed nothing (gRPC codes {answers}): policy not loaded?")
    return {"rules": rules, "checks": checks, "check_codes": answers, "ready": ready, "after_checks": tree_memory(pid)}
