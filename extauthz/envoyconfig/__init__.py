"""Render the Envoy bootstrap that fronts the agents' tool traffic.

One function per Envoy resource, each returning plain dicts in the v3 API's YAML shape, and
:func:`render_bootstrap` to put them together.  The output is deterministic (insertion order,
no timestamps, no absolute paths from the config) so the rendered files under ``envoy/`` are
golden-tested against this module.

The filter chain is ``ext_authz → ext_proc (two instances) → router``:

* ext_authz sends every request, with its body (``pack_as_bytes``), to the Aegis ``Check``;
  it fails closed, and an unreachable service is a 503.
* ext_proc (optional, ``with_ext_proc``) rewrites bodies under the redaction obligations that
  Check left in the ext_authz dynamic-metadata namespace (see ``extauthz.metadata``).  One
  instance per set of body phases; Check's ``body_phases`` metadata picks at most one.
* the router sends the request, unchanged, to the upstream named by the Host header.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from extauthz.config import AegisConfig, load_config
from extauthz.envoyconfig._base import (
    ADMIN_CLUSTER,
    EXT_AUTHZ_FILTER,
    EXT_PROC_CLUSTER,
    EXT_PROC_FILTER,
    EXT_PROC_FILTERS,
    GRPC_CLUSTER,
    INGRESS_LISTENER,
    METRICS_LISTENER,
    OTEL_CLUSTER,
    REQUEST_BODY_FILTER,
    ROUTER_FILTER,
    Resource,
)
from extauthz.envoyconfig.clusters import (
    admin_cluster,
    grpc_cluster,
    may_be_replicated,
    otel_collector_cluster,
    upstream_cluster,
)
from extauthz.envoyconfig.filters import (
    ext_authz_filter,
    ext_proc_filter,
    grpc_service,
    http_filters,
    layered_runtime,
    request_body_filter,
)
from extauthz.envoyconfig.listeners import admin, listener, metrics_listener, overload_manager
from extauthz.envoyconfig.observability import access_log, access_log_format, access_log_path, tracing_provider
from extauthz.errors import ConfigError

# --- bootstrap ----------------------------------------------------------------------------


def render_bootstrap(
    config: AegisConfig,
    *,
    service_endpoints: list[str] | None = None,
    with_ext_proc: bool = True,
    metrics_listen: str | None = None,
    ext_proc_endpoints: list[str] | None = None,
) -> Resource:
    """The whole Envoy bootstrap for ``config``.

    ``service_endpoints`` (default ``[config.service.grpc]``) are the Aegis replicas, each
    ``host:port`` or ``unix:PATH``; ``metrics_listen`` adds a listener exposing only the
    Prometheus stats (for compose).  Calls are retried on another replica only where there
    may be one: several endpoints, or a host name (DNS may answer several addresses, as
    compose's ``--scale`` does).
    """
    endpoints = service_endpoints if service_endpoints is not None else [config.service.grpc]
    proc_endpoints = ext_proc_endpoints if ext_proc_endpoints is not None else [config.service.ext_proc]
    replicated = may_be_replicated(endpoints) or may_be_replicated(proc_endpoints)
    listeners = [listener(config, with_ext_proc=with_ext_proc, replicated=replicated)]
    clusters = [grpc_cluster(endpoints)]
    if with_ext_proc:
        clusters.append(grpc_cluster(proc_endpoints, EXT_PROC_CLUSTER))
    if tracing_provider(config) is not None:
        clusters.append(otel_collector_cluster(config))
    clusters += [upstream_cluster(host, url) for host, url in config.upstreams.items()]
    if metrics_listen is not None:
        listeners.append(metrics_listener(metrics_listen))
        clusters.append(admin_cluster(config))
    return {
        "node": {"id": "aegis-envoy", "cluster": "aegis"},
        "admin": admin(config),
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": overload_manager(),
        "layered_runtime": layered_runtime(),
    }


def render_bootstrap_yaml(
    config: AegisConfig,
    *,
    service_endpoints: list[str] | None = None,
    with_ext_proc: bool = True,
    metrics_listen: str | None = None,
    ext_proc_endpoints: list[str] | None = None,
) -> str:
    """:func:`render_bootstrap` as YAML, with a header naming the source config file."""
    bootstrap = render_bootstrap(
        config,
        service_endpoints=service_endpoints,
        with_ext_proc=with_ext_proc,
        metrics_listen=metrics_listen,
        ext_proc_endpoints=ext_proc_endpoints,
    )
    header = f"# Generated from {config.path.name} by extauthz.envoyconfig (aegis envoy-config); do not edit.\n"
    body: str = yaml.dump(bootstrap, Dumper=_BootstrapDumper, sort_keys=False, default_flow_style=False, width=1000)
    return header + body


class _BootstrapDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` writing multi-line strings (the Lua filter's source) as blocks."""


def _str_block(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_BootstrapDumper.add_representer(str, _str_block)


def envoy_config_command(config_path: str, output: str | None, *, with_ext_proc: bool = True) -> int:
    """``aegis envoy-config -c aegis.yaml [-o FILE]``: render to FILE or stdout; exit status."""
    try:
        text = render_bootstrap_yaml(load_config(config_path), with_ext_proc=with_ext_proc)
    except ConfigError as exc:
        print(f"aegis envoy-config: {exc.message}", file=sys.stderr)
        return 2
    if output is None or output == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"aegis envoy-config: cannot write {output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "ADMIN_CLUSTER",
    "EXT_AUTHZ_FILTER",
    "EXT_PROC_CLUSTER",
    "EXT_PROC_FILTER",
    "EXT_PROC_FILTERS",
    "GRPC_CLUSTER",
    "INGRESS_LISTENER",
    "METRICS_LISTENER",
    "OTEL_CLUSTER",
    "REQUEST_BODY_FILTER",
    "ROUTER_FILTER",
    "Resource",
    "access_log",
    "access_log_format",
    "access_log_path",
    "admin",
    "admin_cluster",
    "envoy_config_command",
    "ext_authz_filter",
    "ext_proc_filter",
    "grpc_cluster",
    "grpc_service",
    "http_filters",
    "layered_runtime",
    "listener",
    "metrics_listener",
    "otel_collector_cluster",
    "overload_manager",
    "render_bootstrap",
    "render_bootstrap_yaml",
    "request_body_filter",
    "tracing_provider",
    "upstream_cluster",
]
