"""The replicas benchmark's own logic, fast and without processes: its config passes the
supervisor's checks for 3 replicas, replica ports never collide, Envoy's ``/clusters`` output
is read per replica, and the ratios are against direct and 1 replica at the same load."""

from __future__ import annotations

from pathlib import Path

from bench.replicas import Run, checks_per_replica, parse_clusters, ratios, replica_config, table
from bench.result import LoadResult
from extauthz.supervisor import REPLICA_PORT_STEP, replicas_of

CLUSTERS = """\
aegis_grpc::default_priority::max_connections::1024
aegis_grpc::127.0.0.1:41000::cx_active::2
aegis_grpc::127.0.0.1:41000::rq_total::120
aegis_grpc::127.0.0.1:41000::health_flags::healthy
aegis_grpc::127.0.0.1:41010::rq_total::95
aegis_grpc::127.0.0.1:41010::health_flags::/failed_active_hc
upstream_payments_demo::127.0.0.1:5000::rq_total::999
"""


def test_config_is_accepted_for_three_replicas_on_redis(tmp_path: Path) -> None:
    taken: set[int] = set()
    config = replica_config(tmp_path / "r3", "127.0.0.1:9", "redis://127.0.0.1:6390/3", 3, taken)
    assert config.store == "redis://127.0.0.1:6390/3"
    assert config.sqlite_path is None
    assert config.approvals.signing_key is not None
    listeners = replicas_of(config, 3)  # raises without a Redis store or a signing key
    ports = {int(a.rsplit(":", 1)[1]) for r in listeners for a in (r.grpc, r.http, r.ext_proc)}
    assert len(ports) == 9 and ports == taken
    grpc0 = int(listeners[0].grpc.rsplit(":", 1)[1])
    assert listeners[2].grpc == f"127.0.0.1:{grpc0 + 2 * REPLICA_PORT_STEP}"
    other = replica_config(tmp_path / "r2", "127.0.0.1:9", "redis://127.0.0.1:6390/2", 2, taken)
    other_ports = {int(a.rsplit(":", 1)[1]) for r in replicas_of(other, 2) for a in (r.grpc, r.http, r.ext_proc)}
    assert not other_ports & ports


def test_clusters_output_is_read_per_replica() -> None:
    hosts = parse_clusters(CLUSTERS)
    assert set(hosts) == {"127.0.0.1:41000", "127.0.0.1:41010", "default_priority"}
    assert hosts["127.0.0.1:41000"]["health_flags"] == "healthy"
    assert hosts["127.0.0.1:41010"]["health_flags"] == "/failed_active_hc"
    after = parse_clusters(CLUSTERS.replace("rq_total::120", "rq_total::170"))
    assert checks_per_replica(hosts, after, ["127.0.0.1:41000", "127.0.0.1:41010", "127.0.0.1:41020"]) == [50, 0, 0]


def _run(target: str, replicas: int, connections: int, rps: float, errors: int = 0) -> Run:
    latency = dict.fromkeys(("min", "mean", "max", "p50", "p90", "p99", "p999"), 1000.0)
    result = LoadResult(int(rps), 1.0, rps, {"status": errors}, latency)
    return Run(target, replicas, connections, result, per_replica=[int(rps)] * max(replicas, 0))


def test_ratios_are_against_direct_and_one_replica_at_the_same_load() -> None:
    runs = [
        _run("direct", 0, 32, 10_000),
        _run("r1", 1, 32, 1_000),
        _run("r2", 2, 32, 1_500),
        _run("r3", 3, 32, 1_200, errors=3),
        _run("direct", 0, 1, 3_000),
        _run("r1", 1, 1, 600),
    ]
    by = ratios(runs)
    assert by[("direct", 32)] == (None, None)
    assert by[("r1", 32)] == (0.1, 1.0)
    assert by[("r2", 32)] == (0.15, 1.5)
    assert by[("r1", 1)] == (0.2, 1.0)
    rendered = table(runs)
    assert "| Envoy → Aegis, 2 replicas | 32 | 1,500 |" in rendered
    assert "| 3 ⚠ | 0.12x | 1.20x | 33 % / 33 % / 33 % |" in rendered
    assert not runs[3].valid and runs[2].valid
