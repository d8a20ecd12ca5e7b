"""``unix:PATH`` gRPC listeners: what the config accepts, what Envoy is told, where replicas
listen; and the retry policy, generated only where a retry can reach another replica."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_config

import extauthz.envoyconfig as ec
from extauthz.config import load_config
from extauthz.errors import ConfigError
from extauthz.supervisor import replica_address, replicas_of


def _config(tmp_path: Path, **service: str):  # type: ignore[no-untyped-def]
    return load_config(write_config(tmp_path, {"service": service}), env={})


def test_a_relative_socket_path_is_made_absolute_from_the_config_file(tmp_path: Path) -> None:
    config = _config(tmp_path, grpc="unix:run/grpc.sock", ext_proc=f"unix:{tmp_path}/p.sock")
    assert config.service.grpc == f"unix:{tmp_path / 'run' / 'grpc.sock'}"
    assert config.service.ext_proc == f"unix:{tmp_path}/p.sock"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("unix:", "host:port or unix:PATH"), (f"unix:/{'x' * 120}.sock", "at most 107 bytes"), ("nope", "host:port")],
)
def test_bad_socket_addresses_are_named(tmp_path: Path, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="service.grpc") as error:
        _config(tmp_path, grpc=value)
    assert expected in str(error.value)


def test_only_grpc_listeners_take_sockets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="service.http"):
        _config(tmp_path, http="unix:/tmp/http.sock")


def test_envoy_reaches_a_socket_through_a_static_pipe(tmp_path: Path) -> None:
    config = _config(tmp_path, grpc="unix:/run/aegis/grpc.sock", ext_proc="unix:/run/aegis/ext_proc.sock")
    clusters = {c["name"]: c for c in ec.render_bootstrap(config)["static_resources"]["clusters"]}
    for name, path in ((ec.GRPC_CLUSTER, "/run/aegis/grpc.sock"), (ec.EXT_PROC_CLUSTER, "/run/aegis/ext_proc.sock")):
        cluster = clusters[name]
        assert cluster["type"] == "STATIC"
        [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"] == {"pipe": {"path": path}}
        assert cluster["health_checks"]  # gRPC health checks run over the pipe too


def test_sockets_and_host_names_cannot_share_a_cluster() -> None:
    with pytest.raises(ConfigError, match="cannot be mixed"):
        ec.grpc_cluster(["unix:/run/a.sock", "aegis:9191"])


def _grpc_services(bootstrap: dict) -> list[dict]:  # type: ignore[type-arg]
    found: list[dict] = []  # type: ignore[type-arg]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "grpc_service" in node:
                found.append(node["grpc_service"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(bootstrap)
    return found


@pytest.mark.parametrize(
    ("endpoints", "retried"),
    [
        (["127.0.0.1:9191"], False),  # one replica: nowhere else to go
        (["unix:/run/aegis/grpc.sock"], False),
        (["127.0.0.1:9191", "127.0.0.1:9201"], True),
        (["aegis:9191"], True),  # a DNS name may answer several replicas (compose --scale)
    ],
)
def test_calls_are_retried_only_where_another_replica_may_exist(
    tmp_path: Path, endpoints: list[str], retried: bool
) -> None:
    config = _config(tmp_path)
    bootstrap = ec.render_bootstrap(config, service_endpoints=endpoints, ext_proc_endpoints=endpoints)
    services = _grpc_services(bootstrap)
    assert len(services) == 3  # ext_authz and the two ext_proc instances
    assert all(("retry_policy" in s) is retried for s in services)


def test_replicas_get_their_own_sockets_and_ports() -> None:
    assert replica_address("unix:/run/aegis/grpc.sock", 0) == "unix:/run/aegis/grpc.sock"
    assert replica_address("unix:/run/aegis/grpc.sock", 2) == "unix:/run/aegis/grpc.replica-2.sock"
    assert replica_address("127.0.0.1:9191", 1) == "127.0.0.1:9201"


def test_replicas_of_a_socket_config(tmp_path: Path) -> None:
    raw = {
        "service": {"grpc": "unix:/run/aegis/grpc.sock", "ext_proc": "unix:/run/aegis/ext_proc.sock"},
        "store": "redis://127.0.0.1:6379/0",
        "approvals": {"signing_key": "keys/override.pem"},
    }
    config = load_config(write_config(tmp_path, raw), env={})
    grpc = [r.grpc for r in replicas_of(config, 3)]
    assert grpc == [
        "unix:/run/aegis/grpc.sock",
        "unix:/run/aegis/grpc.replica-1.sock",
        "unix:/run/aegis/grpc.replica-2.sock",
    ]
