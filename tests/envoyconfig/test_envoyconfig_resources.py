"""Structural facts of the rendered resources that the rest of Aegis depends on."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz import envoyconfig as ec
from extauthz.config import AegisConfig, EnvoyConfig, IdentityConfig, PolicyConfig
from extauthz.errors import ConfigError
from extauthz.metadata import (
    ACCESS_LOG_METADATA_KEYS,
    BODY_PHASES,
    EXT_AUTHZ_NAMESPACE,
    EXT_PROC_NAMESPACE,
    FEATURE_REQUEST_BODY_FILTER,
    GRPC_ENVOY_FEATURES,
    MD_BODY_PHASES,
    MD_REQUEST_BODY,
)

UPSTREAMS = {"payments.demo": "http://127.0.0.1:18081", "crm.demo": "http://crm:8080"}


def make_config(tmp: Path = Path("/srv/aegis"), **envoy: Any) -> AegisConfig:
    return AegisConfig(
        path=tmp / "aegis.yaml",
        identity=IdentityConfig(issuer="https://issuer", audience="aegis", public_keys=(tmp / "k.pem",)),
        policy=PolicyConfig(dir=tmp / "policies"),
        envoy=EnvoyConfig(**envoy),
        upstreams=UPSTREAMS,
    )


def hcm(bootstrap: dict[str, Any], listener: str = ec.INGRESS_LISTENER) -> dict[str, Any]:
    found = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == listener)
    typed: dict[str, Any] = found["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def cluster(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name)


def endpoints(c: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (address["address"], address["port_value"])
        for group in c["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
        for address in [e["endpoint"]["address"]["socket_address"]]
    ]


def test_grpc_cluster_speaks_http2_explicitly() -> None:
    grpc = cluster(ec.render_bootstrap(make_config()), ec.GRPC_CLUSTER)
    options = grpc["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["@type"].endswith("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    assert "http2_protocol_options" in options["explicit_http_config"]


def test_grpc_cluster_defaults_to_the_configured_service_address() -> None:
    grpc = cluster(ec.render_bootstrap(make_config()), ec.GRPC_CLUSTER)
    assert endpoints(grpc) == [("127.0.0.1", 9191)]
    assert grpc["type"] == "STATIC"


def test_replicas_are_separate_endpoints_with_an_active_grpc_health_check() -> None:
    replicas = ["127.0.0.1:9191", "127.0.0.1:9193", "aegis-2:9191"]
    grpc = cluster(ec.render_bootstrap(make_config(), service_endpoints=replicas), ec.GRPC_CLUSTER)
    assert endpoints(grpc) == [("127.0.0.1", 9191), ("127.0.0.1", 9193), ("aegis-2", 9191)]
    assert grpc["type"] == "STRICT_DNS"  # one name among them
    assert grpc["lb_policy"] == "LEAST_REQUEST"
    [check] = grpc["health_checks"]
    assert check["grpc_health_check"] == {"service_name": ""}
    assert check["no_traffic_interval"] == check["interval"]


def test_no_service_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        ec.render_bootstrap(make_config(), service_endpoints=[])


def test_grpc_calls_retry_only_where_the_call_never_reached_a_replica() -> None:
    service = ec.grpc_service()
    assert service["envoy_grpc"] == {"cluster_name": ec.GRPC_CLUSTER}
    assert service["timeout"] == "1s"
    assert set(service["retry_policy"]["retry_on"].split(",")) == {"connect-failure", "refused-stream"}


def test_connection_manager_canonicalises_paths_and_owns_request_ids() -> None:
    manager = hcm(ec.render_bootstrap(make_config()))
    assert manager["normalize_path"] is True
    assert manager["merge_slashes"] is True
    assert manager["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert manager["use_remote_address"] is True
    assert manager["generate_request_id"] is True
    assert manager["preserve_external_request_id"] is False
    assert "tracing" not in manager  # tracing_provider() is a hook returning None for now
    assert ec.tracing_provider(make_config()) is None


@pytest.mark.parametrize("with_ext_proc", [True, False])
def test_filter_chain_order(with_ext_proc: bool) -> None:
    manager = hcm(ec.render_bootstrap(make_config(), with_ext_proc=with_ext_proc))
    names = [f["name"] for f in manager["http_filters"]]
    if with_ext_proc:
        assert names == [ec.EXT_AUTHZ_FILTER, ec.EXT_PROC_FILTER, ec.REQUEST_BODY_FILTER, ec.ROUTER_FILTER]
    else:
        assert names == [ec.EXT_AUTHZ_FILTER, ec.ROUTER_FILTER]
    # The unknown host has no Check, hence no body_phases: no ext_proc instance needs disabling.
    per_route = manager["route_config"]["virtual_hosts"][-1]["typed_per_filter_config"]
    assert list(per_route) == [ec.EXT_AUTHZ_FILTER]


def created_filters(resource: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """A composite filter's choices: filter name → (the predicate on Check's metadata that
    creates it, its typed config)."""
    wrapper = resource["typed_config"]
    assert wrapper["@type"].endswith("ExtensionWithMatcher")
    assert wrapper["extension_config"]["typed_config"]["@type"].endswith("filters.http.composite.v3.Composite")
    matcher_list = wrapper["xds_matcher"]["matcher_list"]
    assert "on_no_match" not in wrapper["xds_matcher"]  # no match: no filter is created
    found = {}
    for matcher in matcher_list["matchers"]:
        action = matcher["on_match"]["action"]["typed_config"]
        assert action["@type"].endswith("composite.v3.ExecuteFilterAction")
        predicate = matcher["predicate"]["single_predicate"]
        # Dynamic metadata Check wrote, not a header: the agent cannot choose (or skip) the filter.
        assert predicate["input"]["typed_config"]["@type"].endswith("DynamicMetadataInput")
        assert predicate["input"]["typed_config"]["filter"] == EXT_AUTHZ_NAMESPACE
        found[action["typed_config"]["name"]] = (predicate, action["typed_config"]["typed_config"])
    return found


def ext_proc_instance(phases: str) -> dict[str, Any]:
    return created_filters(ec.ext_proc_filter())[ec.EXT_PROC_FILTERS[phases]][1]


def test_each_ext_proc_instance_is_created_only_when_checks_metadata_names_it() -> None:
    created = created_filters(ec.ext_proc_filter())
    assert list(created) == [ec.EXT_PROC_FILTERS[phases] for phases in BODY_PHASES]
    for phases in BODY_PHASES:
        predicate, typed = created[ec.EXT_PROC_FILTERS[phases]]
        assert typed["@type"].endswith("ext_proc.v3.ExternalProcessor")
        assert predicate["input"]["typed_config"]["path"] == [{"key": MD_BODY_PHASES}]
        assert predicate["custom_match"]["typed_config"]["value"] == {"string_match": {"exact": phases}}


def test_the_lua_filter_is_created_only_for_a_request_body_check_redacted() -> None:
    [(predicate, lua)] = created_filters(ec.request_body_filter()).values()
    assert lua["@type"].endswith("filters.http.lua.v3.Lua")
    source = lua["default_source_code"]["inline_string"]
    assert f'get("{EXT_AUTHZ_NAMESPACE}")["{MD_REQUEST_BODY}"]' in source
    assert '":status"] = "502"' in source  # a failure refuses the call, never sends the agent's body
    assert predicate["input"]["typed_config"]["path"] == [{"key": MD_REQUEST_BODY}]
    assert predicate["custom_match"]["typed_config"]["value"] == {"present_match": True}


@pytest.mark.parametrize("with_ext_proc", [True, False])
def test_check_is_told_envoy_puts_the_body_only_when_the_filter_is_there(with_ext_proc: bool) -> None:
    manager = hcm(ec.render_bootstrap(make_config(), with_ext_proc=with_ext_proc))
    [authz] = [f for f in manager["http_filters"] if f["name"] == ec.EXT_AUTHZ_FILTER]
    metadata = authz["typed_config"]["grpc_service"].get("initial_metadata", [])
    expected = [{"key": GRPC_ENVOY_FEATURES, "value": FEATURE_REQUEST_BODY_FILTER}] if with_ext_proc else []
    assert metadata == expected


def test_the_response_only_instance_sends_no_request_message() -> None:
    both, response = (ext_proc_instance(phases) for phases in BODY_PHASES)
    # The request headers: the redacted request body's content-length is set there.  The
    # response headers: Envoy holds the response back while its body is redacted.
    assert both["processing_mode"] == {
        "request_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "response_header_mode": "SEND",
        "response_body_mode": "BUFFERED",
    }
    assert response["processing_mode"] == {
        "request_header_mode": "SKIP",
        "request_body_mode": "NONE",
        "response_header_mode": "SEND",
        "response_body_mode": "BUFFERED",
    }
    # The answer to the response headers switches an event stream to STREAMED.
    assert both["allow_mode_override"] is True and response["allow_mode_override"] is True


@pytest.mark.parametrize("phases", BODY_PHASES)
def test_ext_proc_fails_closed_and_receives_the_metadata_and_attributes_it_reads(phases: str) -> None:
    typed = ext_proc_instance(phases)
    assert typed["failure_mode_allow"] is False
    assert typed["message_timeout"] == "1s"
    assert typed["status_on_error"] == {"code": "ServiceUnavailable"}
    assert typed["metadata_options"]["forwarding_namespaces"] == {"untyped": [EXT_AUTHZ_NAMESPACE]}
    assert typed["metadata_options"]["receiving_namespaces"] == {"untyped": [EXT_PROC_NAMESPACE]}
    # A stream that starts at the response body still finds the agent's trace context.
    assert "request.headers['traceparent']" in typed["response_attributes"]


def test_routes_by_host_to_one_cluster_each_unchanged() -> None:
    bootstrap = ec.render_bootstrap(make_config())
    hosts = hcm(bootstrap)["route_config"]["virtual_hosts"]
    assert [h["domains"] for h in hosts[:-1]] == [["payments.demo", "payments.demo:*"], ["crm.demo", "crm.demo:*"]]
    for host in hosts[:-1]:
        [route] = host["routes"]
        assert route["route"] == {"cluster": host["name"]}  # no rewrite, no retries, no timeout games
    assert endpoints(cluster(bootstrap, "upstream_payments_demo")) == [("127.0.0.1", 18081)]
    assert cluster(bootstrap, "upstream_payments_demo")["type"] == "STATIC"
    assert endpoints(cluster(bootstrap, "upstream_crm_demo")) == [("crm", 8080)]
    assert cluster(bootstrap, "upstream_crm_demo")["type"] == "STRICT_DNS"


def test_unknown_host_is_a_direct_json_404_without_a_check() -> None:
    default = hcm(ec.render_bootstrap(make_config()))["route_config"]["virtual_hosts"][-1]
    assert default["domains"] == ["*"]
    [route] = default["routes"]
    assert route["direct_response"] == {"status": 404, "body": {"inline_string": '{"error":"unknown_host"}'}}
    assert default["typed_per_filter_config"][ec.EXT_AUTHZ_FILTER]["disabled"] is True


def test_https_upstream_verifies_the_server_name() -> None:
    tls = ec.upstream_cluster("api.example.com", "https://api.example.com")
    assert endpoints(tls) == [("api.example.com", 443)]
    context = tls["transport_socket"]["typed_config"]
    assert context["sni"] == "api.example.com"
    assert context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "api.example.com"}}
    ]


def test_access_log_to_stdout_carries_the_decision_metadata() -> None:
    log = ec.access_log(make_config())
    assert log["name"] == "envoy.access_loggers.stdout"
    fields = log["typed_config"]["log_format"]["json_format"]
    for key in ACCESS_LOG_METADATA_KEYS:
        assert fields[key] == f"%DYNAMIC_METADATA({EXT_AUTHZ_NAMESPACE}:{key})%"
    assert fields["path"] == "%REQ_WITHOUT_QUERY(:PATH)%"  # query values may carry PII
    assert fields["request_id"] == "%REQ(X-REQUEST-ID)%"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("/var/log/aegis/access.log", "/var/log/aegis/access.log"), ("logs/access.log", "/srv/aegis/logs/access.log")],
)
def test_file_access_log_path(setting: str, expected: str) -> None:
    config = make_config(access_log=setting)
    log = ec.access_log(config)
    assert log["name"] == "envoy.access_loggers.file"
    assert log["typed_config"]["path"] == expected
    assert ec.access_log_path(config) == Path(expected)
    assert ec.access_log_path(make_config()) is None


def test_admin_on_the_configured_loopback_address() -> None:
    bootstrap = ec.render_bootstrap(make_config(admin="127.0.0.1:19901"))
    assert bootstrap["admin"] == {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 19901}}}


def test_metrics_listener_exposes_only_prometheus_stats() -> None:
    plain = ec.render_bootstrap(make_config())
    assert [x["name"] for x in plain["static_resources"]["listeners"]] == [ec.INGRESS_LISTENER]
    bootstrap = ec.render_bootstrap(make_config(), metrics_listen="0.0.0.0:9902")
    routes = hcm(bootstrap, ec.METRICS_LISTENER)["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0] == {"match": {"path": "/stats/prometheus"}, "route": {"cluster": ec.ADMIN_CLUSTER}}
    assert routes[1]["direct_response"]["status"] == 404
    assert endpoints(cluster(bootstrap, ec.ADMIN_CLUSTER)) == [("127.0.0.1", 9901)]


def test_envoy_config_command_writes_file_or_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "aegis.yaml"
    source.write_text(
        "identity: {issuer: i, audience: a, public_keys: [k.pem]}\npolicy: {dir: p}\n"
        "upstreams: {payments.demo: 'http://127.0.0.1:18081'}\n",
        encoding="utf-8",
    )
    out = tmp_path / "envoy.yaml"
    assert ec.envoy_config_command(str(source), str(out)) == 0
    assert yaml.safe_load(out.read_text())["admin"]["address"]["socket_address"]["port_value"] == 9901
    assert ec.envoy_config_command(str(source), None) == 0
    assert capsys.readouterr().out == out.read_text()


def test_envoy_config_command_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ec.envoy_config_command(str(tmp_path / "missing.yaml"), None) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_render_does_not_depend_on_the_config_location() -> None:
    here, there = make_config(Path("/a")), dataclasses.replace(make_config(Path("/b/c")))
    assert ec.render_bootstrap_yaml(here) == ec.render_bootstrap_yaml(there)
