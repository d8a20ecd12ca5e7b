"""The three HTTP targets of the gateway benchmark, on free loopback ports.

* ``upstream``: a second Envoy answering every request with a fixed JSON 200
  (``direct_response`` after a ``buffer`` filter, so the request body is read first and
  keep-alive connections are reused).  It stands in for the tool server and must not be
  the bottleneck: the harness measures it alone too.
* ``direct``: Envoy with the bootstrap ``render_bootstrap`` generates for the benchmark's
  ``aegis.yaml``, minus the ext_authz filter, its per-route overrides and the Aegis gRPC
  cluster (:func:`strip_authz`).  Same listener, HCM options and access-log format as
  ``aegis`` (its own log file).
* ``floor``: the same generated bootstrap in front of ``python -m bench.noop_authz``, a Check
  that answers OK without deciding anything: what a Python gRPC ext_authz costs by itself.
* ``aegis``: the full generated bootstrap (ext_authz → router; ext_proc is measured by
  ``bench.dlp_gateway``) in front of ``python -m extauthz.cli serve`` with the repo's policies.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from bench.procs import BenchError, ProcessGroup, wait_ready
from extauthz.config import AegisConfig, load_config
from extauthz.devtokens import generate_keypair, mint_token
from extauthz.envoyconfig import (
    EXT_AUTHZ_FILTER,
    EXT_PROC_FILTERS,
    GRPC_CLUSTER,
    render_bootstrap,
)
from extauthz.ports import free_loopback_port
from extauthz.supervisor import envoy_binary

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
TOOL_HOST = "payments.demo"
UPSTREAM_BODY = '{"status":"refunded","refund_id":"bench"}'
TOKEN_TTL_S = 1800  # far longer than a run (a few minutes)
MAX_TOKEN_LIFETIME = "1h"  # identity.max_lifetime must accept TOKEN_TTL_S
AGENT = "bench-bot"
TENANT = "acme"
SCOPES = ("payments.refund",)
AUTHZ_FILTERS = {EXT_AUTHZ_FILTER, *EXT_PROC_FILTERS.values()}
_T = "type.googleapis.com/envoy."
_HCM = "envoy.filters.network.http_connection_manager"


def loopback() -> str:
    return f"127.0.0.1:{free_loopback_port()}"


# How Envoy reaches the gRPC services under test (Aegis, the no-op floor, the OPA plugin):
# a Unix socket, as a sidecar on the same host is deployed (docs/performance.md), or TCP.
TRANSPORTS = ("unix", "tcp")
DEFAULT_TRANSPORT = "unix"


def grpc_listen(workdir: Path, name: str, transport: str) -> str:
    """Where a gRPC service under test listens: ``unix:`` a socket in ``workdir``, or a free
    loopback port."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport: expected one of {TRANSPORTS}, got {transport!r}")
    return f"unix:{workdir / f'{name}.sock'}" if transport == "unix" else loopback()


@dataclass(frozen=True)
class Target:
    """An HTTP endpoint under test: where to send, and the Envoy admin API behind it."""

    name: str
    listen: str
    admin: str

    @property
    def url(self) -> str:
        return f"http://{self.listen}"


@dataclass(frozen=True)
class BenchStack:
    """Everything the benchmark started, and the agent token it sends."""

    upstream: Target
    direct: Target
    aegis: Target
    token: str
    service_http: str
    envoy_binary: str
    floor: Target | None = None  # Envoy → a no-op Python Check (bench.noop_authz)


# --- configs ------------------------------------------------------------------------------


def write_aegis_config(
    workdir: Path,
    upstream: str,
    *,
    policy_dir: Path = POLICIES,
    hosts: tuple[str, ...] = (TOOL_HOST,),
    decision_cache: bool = True,
    transport: str = DEFAULT_TRANSPORT,
) -> AegisConfig:
    """An aegis.yaml on free loopback ports, with fresh dev keys and the repo's policies
    (or ``policy_dir``); every host in ``hosts`` goes to the ``upstream`` address.
    ``decision_cache`` False makes every call take the full path (as distinct calls do).
    The gRPC listeners are Unix sockets in ``workdir``, or loopback ports (``transport``)."""
    generate_keypair(workdir / "keys" / "dev.pem", workdir / "keys" / "dev.pub.pem")
    raw: dict[str, Any] = {
        "envoy": {"listen": loopback(), "admin": loopback(), "access_log": str(workdir / "aegis-access.log")},
        "service": {
            "grpc": grpc_listen(workdir, "aegis-grpc", transport),
            "http": loopback(),
            "ext_proc": grpc_listen(workdir, "aegis-ext-proc", transport),
        },
        "identity": {
            "issuer": "https://issuer.bench",
            "audience": "aegis-bench",
            "public_keys": ["keys/dev.pub.pem"],
            "dev_signing_key": "keys/dev.pem",
            "max_lifetime": MAX_TOKEN_LIFETIME,
        },
        "policy": {"dir": str(policy_dir), **({} if decision_cache else {"decision_cache": 0})},
        "store": "sqlite:///aegis.db",
        "upstreams": {host: f"http://{upstream}" for host in hosts},
    }
    path = workdir / "aegis.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_config(path)


def strip_authz(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """A copy of a rendered bootstrap without ext_authz/ext_proc and the Aegis gRPC cluster."""
    out = copy.deepcopy(bootstrap)
    resources = out["static_resources"]
    for listener in resources["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == _HCM:
                    _strip_hcm(network_filter["typed_config"])
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] != GRPC_CLUSTER]
    return out


def _strip_hcm(hcm: dict[str, Any]) -> None:
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in AUTHZ_FILTERS]
    for vhost in hcm.get("route_config", {}).get("virtual_hosts", []):
        per_filter = vhost.get("typed_per_filter_config", {})
        for name in AUTHZ_FILTERS:
            per_filter.pop(name, None)
        if not per_filter:
            vhost.pop("typed_per_filter_config", None)


def moved_config(config: AegisConfig, target: Target, access_log: Path) -> AegisConfig:
    """``config`` with Envoy on ``target``'s ports and its own access log."""
    envoy = replace(config.envoy, listen=target.listen, admin=target.admin, access_log=str(access_log))
    return replace(config, envoy=envoy)


def direct_bootstrap(config: AegisConfig, listen: str, admin: str, access_log: Path) -> dict[str, Any]:
    """The generated bootstrap on other ports and its own access log, without authorisation."""
    moved = moved_config(config, Target("direct", listen, admin), access_log)
    return strip_authz(render_bootstrap(moved, with_ext_proc=False))


def floor_bootstrap(config: AegisConfig, target: Target, access_log: Path, noop_grpc: str) -> dict[str, Any]:
    """The generated bootstrap (ext_authz → router) on ``target``'s ports, Check on ``noop_grpc``."""
    return render_bootstrap(
        moved_config(config, target, access_log), service_endpoints=[noop_grpc], with_ext_proc=False
    )


def _fixed_route(prefix: str, body: str) -> dict[str, Any]:
    return {
        "match": {"prefix": prefix},
        "direct_response": {"status": 200, "body": {"inline_string": body}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
    }


def upstream_bootstrap(listen: str, admin: str, bodies: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A minimal Envoy answering ``UPSTREAM_BODY`` (200, JSON) once the request body is in;
    paths starting with a key of ``bodies`` get that body instead."""
    host, port = listen.rsplit(":", 1)
    admin_host, admin_port = admin.rsplit(":", 1)
    routes = [_fixed_route(prefix, body) for prefix, body in (bodies or {}).items()]
    routes.append(_fixed_route("/", UPSTREAM_BODY))
    hcm = {
        "@type": _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "codec_type": "AUTO",
        "route_config": {"name": "fixed", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {"@type": _T + "extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 65536},
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _T + "extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    listener = {
        "name": "upstream",
        "address": {"socket_address": {"address": host, "port_value": int(port)}},
        "filter_chains": [{"filters": [{"name": _HCM, "typed_config": hcm}]}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": int(admin_port)}}},
        "static_resources": {"listeners": [listener]},
    }


# --- processes ----------------------------------------------------------------------------


def start_envoy(
    group: ProcessGroup, name: str, bootstrap: dict[str, Any], admin: str, binary: str, concurrency: int
) -> None:
    path = group.log_dir / f"{name}.envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False), encoding="utf-8")
    argv = [binary, "-c", str(path), "--disable-hot-restart", "--concurrency", str(concurrency)]
    argv += ["--log-level", "warn", "--file-flush-interval-msec", "1000"]
    child = group.spawn(name, argv)
    wait_ready(child, f"http://{admin}/ready", lambda r: r.status_code == 200 and r.text.strip() == "LIVE")


def start_service(group: ProcessGroup, config: AegisConfig) -> None:
    argv = [sys.executable, "-m", "extauthz.cli", "serve", "-c", str(config.path)]
    child = group.spawn("aegis-service", argv, cwd=REPO)
    wait_ready(child, f"http://{config.service.http}/readyz", lambda r: r.status_code == 200)


def start_bench_stack(
    group: ProcessGroup,
    workdir: Path,
    envoy_concurrency: int,
    *,
    decision_cache: bool = True,
    transport: str = DEFAULT_TRANSPORT,
) -> BenchStack:
    """Start upstream, direct Envoy, the Aegis service and its Envoy, the no-op Check and its
    Envoy, each once ready.

    The processes belong to ``group``, which stops them when its own ``with`` block ends.
    """
    upstream = Target("upstream", loopback(), loopback())
    config = write_aegis_config(workdir, upstream.listen, decision_cache=decision_cache, transport=transport)
    direct = Target("direct", loopback(), loopback())
    aegis = Target("aegis", config.envoy.listen, config.envoy.admin)
    floor = Target("floor", loopback(), loopback())
    binary = envoy_binary(config)
    try:
        start_envoy(group, "upstream", upstream_bootstrap(upstream.listen, upstream.admin), upstream.admin, binary, 1)
        direct_boot = direct_bootstrap(config, direct.listen, direct.admin, workdir / "direct-access.log")
        start_envoy(group, "direct", direct_boot, direct.admin, binary, envoy_concurrency)
        start_service(group, config)
        aegis_boot = render_bootstrap(config, with_ext_proc=False)
        start_envoy(group, "aegis", aegis_boot, aegis.admin, binary, envoy_concurrency)
        noop_grpc = grpc_listen(workdir, "noop-check", transport)
        group.spawn("noop-authz", [sys.executable, "-m", "bench.noop_authz", noop_grpc], cwd=REPO)
        floor_boot = floor_bootstrap(config, floor, workdir / "floor-access.log", noop_grpc)
        start_envoy(group, "floor", floor_boot, floor.admin, binary, envoy_concurrency)
    except OSError as exc:
        raise BenchError(f"cannot start the stack: {exc}") from exc
    token = mint_token(config.identity, agent=AGENT, tenant=TENANT, scopes=SCOPES, ttl_s=TOKEN_TTL_S)
    return BenchStack(upstream, direct, aegis, token, config.service.http, binary, floor)
