"""docker-compose.yml is structurally sound and wired as the configs it mounts say.

No Docker engine runs here, so this checks what can be checked from the files: every service
can be built or pulled, every local file it mounts exists, names it refers to exist, host
ports do not clash, and the addresses in the rendered Envoy config, the aegis config and the
Prometheus/collector configs agree with the compose service names, ports and networks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.config import load_config, parse_address

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load(COMPOSE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose["services"]
    assert isinstance(result, dict) and result
    return result


def _host_path(spec: str) -> Path | None:
    source = spec.split(":", 1)[0]
    if source.startswith((".", "/")):
        return (REPO / source).resolve()
    return None


def _volume_specs(service: dict[str, Any]) -> list[str]:
    return [v if isinstance(v, str) else v["source"] for v in service.get("volumes", [])]


def _mount(service: dict[str, Any], target: str) -> Path:
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        if parts[1] == target:
            path = _host_path(spec)
            assert path is not None, f"{target} is not a bind mount"
            return path
    raise AssertionError(f"nothing mounted at {target}")


def _networks(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks", [])
    return set(networks if isinstance(networks, list) else networks.keys())


def _share_network(services: dict[str, dict[str, Any]], a: str, b: str) -> bool:
    return bool(_networks(services[a]) & _networks(services[b]))


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin a tag, got {image}"


def test_build_context_and_dockerfile_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (REPO / context).is_dir(), name
        assert (REPO / context / dockerfile).is_file(), f"{name}: {dockerfile} missing"


def test_mounted_local_files_exist_and_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes", {}) or {})
    for name, service in services.items():
        for spec in _volume_specs(service):
            path = _host_path(spec)
            if path is None:
                assert spec.split(":", 1)[0] in declared, f"{name}: undeclared volume in {spec}"
            else:
                assert path.exists(), f"{name}: {spec} mounts a missing {path}"


def test_host_ports_do_not_clash(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, service in services.items():
        for spec in service.get("ports", []):
            parts = str(spec).split(":")
            assert len(parts) in (2, 3), f"{name}: publish host ports explicitly, got {spec}"
            key = (parts[0] if len(parts) == 3 else "0.0.0.0", parts[-2])
            clash = [other for (ip, port), other in seen.items() if port == key[1]]
            assert not clash, f"host port {key[1]} published by {name} and {clash[0]}"
            seen[key] = name


def test_depends_on_names_exist_with_sensible_conditions(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        entries = {d: {} for d in depends} if isinstance(depends, list) else depends
        for dependency, options in entries.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = (options or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is not a one-shot job"


def test_networks_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("networks", {}) or {})
    for name, service in services.items():
        assert not (_networks(service) and "network_mode" in service), name
        assert _networks(service) <= declared, f"{name}: undeclared network"


def test_envoy_runs_the_rendered_compose_config(services: dict[str, dict[str, Any]]) -> None:
    envoy = services["envoy"]
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    assert _mount(envoy, "/etc/envoy/envoy.yaml") == REPO / "envoy" / "compose.yaml"
    assert "/etc/envoy/envoy.yaml" in envoy["command"]


def _envoy_bootstrap() -> dict[str, Any]:
    data = _load(REPO / "envoy" / "compose.yaml")
    assert isinstance(data, dict)
    return data


def _cluster_hosts(bootstrap: dict[str, Any], name: str) -> list[tuple[str, int]]:
    cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name)
    return [
        (address["address"], address["port_value"])
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
        for address in [e["endpoint"]["address"]["socket_address"]]
    ]


def _listener_port(bootstrap: dict[str, Any], name: str) -> int:
    listener = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == name)
    return int(listener["address"]["socket_address"]["port_value"])


def test_envoy_reaches_aegis_and_the_tools_over_shared_networks(services: dict[str, dict[str, Any]]) -> None:
    bootstrap = _envoy_bootstrap()
    aegis_port = parse_address(services["aegis"]["environment"]["AEGIS_GRPC_ADDR"])[1]
    assert _cluster_hosts(bootstrap, "aegis_grpc") == [("aegis", aegis_port)]
    assert _share_network(services, "envoy", "aegis")
    for cluster in bootstrap["static_resources"]["clusters"]:
        if cluster["name"].startswith("upstream_"):
            for host, _ in _cluster_hosts(bootstrap, cluster["name"]):
                assert host in services and _share_network(services, "envoy", host), cluster["name"]
                # Tools are reachable only through Envoy.
                assert not _share_network(services, "aegis", host)


def test_agents_reach_the_envoy_listener(services: dict[str, dict[str, Any]]) -> None:
    bootstrap = _envoy_bootstrap()
    listen = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listen["address"] == "0.0.0.0"
    published = [str(p).split(":")[-1] for p in services["envoy"]["ports"]]
    assert str(listen["port_value"]) in published


def test_aegis_service_config_loads_as_compose_runs_it(services: dict[str, dict[str, Any]]) -> None:
    aegis = services["aegis"]
    config_path = _mount(aegis, "/etc/aegis/aegis.yaml")
    assert config_path == REPO / "deploy" / "aegis.compose.yaml"
    assert aegis["command"] == ["aegis", "serve", "-c", "/etc/aegis/aegis.yaml"]
    config = load_config(config_path, env=aegis["environment"])
    assert config.service.grpc == "0.0.0.0:9191"  # the process binds every interface
    assert load_config(config_path, env={}).service.grpc == "aegis:9191"  # Envoy dials this
    assert config.sqlite_path is not None and str(config.sqlite_path).startswith("/var/lib/aegis/")


def test_prometheus_scrapes_aegis_and_envoy_stats(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    config = _load(_mount(prometheus, "/etc/prometheus/prometheus.yml"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in jobs.values():
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, _ = parse_address(target)
                if host != "localhost":
                    assert host in services and _share_network(services, "prometheus", host), target
    aegis_http = load_config(REPO / "deploy" / "aegis.compose.yaml", env={}).service.http
    assert jobs["aegis"]["static_configs"][0]["targets"] == [aegis_http]
    assert jobs["aegis"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    metrics_port = _listener_port(_envoy_bootstrap(), "envoy_metrics")
    assert jobs["envoy"]["static_configs"][0]["targets"] == [f"envoy:{metrics_port}"]


def test_otel_collector_pipelines_use_declared_components(services: dict[str, dict[str, Any]]) -> None:
    collector = services["otel-collector"]
    config = _load(_mount(collector, "/etc/otelcol-contrib/config.yaml"))
    assert "--config=/etc/otelcol-contrib/config.yaml" in collector["command"]
    for pipeline, spec in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in spec.get(kind, []):
                assert component in config[kind], f"{pipeline}: {kind} {component} undeclared"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    jaeger_host, _ = parse_address(config["exporters"]["otlp/jaeger"]["endpoint"])
    assert jaeger_host in services and _share_network(services, "otel-collector", jaeger_host)
    otlp = services["aegis"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert otlp.removeprefix("http://").split(":")[0] == "otel-collector"
    assert _share_network(services, "aegis", "otel-collector")


def test_opa_serves_the_bundle_the_policy_job_builds(services: dict[str, dict[str, Any]]) -> None:
    opa, job = services["opa"], services["policy-bundle"]
    assert opa["image"].startswith("openpolicyagent/opa:1.22.2")
    assert "run" in opa["command"] and "--server" in opa["command"]
    bundle = opa["command"][opa["command"].index("--bundle") + 1]
    assert bundle in job["command"]  # the job writes exactly what OPA loads
    assert _share_network(services, "aegis", "opa") and _share_network(services, "aegis", "redis")


def test_dockerfile_copies_only_from_its_own_earlier_stages() -> None:
    """Each ``COPY --from=stage`` names a stage defined above it (the builder of the compiled
    parts), and that stage builds both crates."""
    stages: list[str] = []
    copied_from: list[str] = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            if "AS" in words:
                stages.append(words[words.index("AS") + 1])
        elif words[:1] == ["COPY"]:
            for word in words[1:]:
                if word.startswith("--from="):
                    source = word.removeprefix("--from=")
                    assert source in stages, f"COPY --from={source} before (or without) its stage"
                    copied_from.append(source)
    # The image runs the compiled DLP core and gRPC front, not the Python fallbacks.
    assert "native" in copied_from
    dockerfile = (REPO / "Dockerfile").read_text()
    for crate in ("dlp/native", "extauthz/native"):
        assert f"maturin build --release --interpreter python3 -m {crate}/Cargo.toml --out /wheels" in dockerfile
