"""The gateway benchmark's own logic, fast and without Envoy: wrk output parsing, the Lua
script, the direct (no ext_authz) bootstrap, the refusal to measure error pages, and the
open-loop generator against a tiny local HTTP server.  No timing assertions."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.gateway import ext_authz_counters, plan, verify
from bench.openloop import OpenLoop, open_loop
from bench.procs import BenchError, ProcessGroup
from bench.report import Measurement, Scenario, compare, compare_rounds, floor_split, summary
from bench.request import refund_request
from bench.result import LoadResult, percentile
from bench.stack import (
    TOOL_HOST,
    UPSTREAM_BODY,
    BenchStack,
    Target,
    start_bench_stack,
    strip_authz,
    write_aegis_config,
)
from bench.wrk import lua_script, lua_string, parse_wrk_output
from extauthz.envoyconfig import EXT_AUTHZ_FILTER, GRPC_CLUSTER, render_bootstrap

# Captured from `wrk -t1 -c2 -d1s -s <lua_script(...)>` against the upstream Envoy.
WRK_SAMPLE = """\
Running 1s test @ http://127.0.0.1:44131/v1/refunds
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   128.32us   73.04us   2.30ms   98.89%
    Req/Sec    14.99k     1.70k   17.05k    70.00%
  14887 requests in 1.00s, 2.33MB read
Requests/sec:  14883.35
Transfer/sec:      2.33MB
WRK_JSON {"requests":14887,"duration_us":1000245,"bytes":2441468,"rps":14883.35,"errors":{"connect":0,"read":0,\
"write":0,"status":0,"timeout":0},"latency_us":{"min":65,"mean":128.3,"max":2303,"stdev":73.0,"p50":119,"p90":160,\
"p99":205,"p999":1365}}
"""


def test_wrk_done_line_is_parsed() -> None:
    result = parse_wrk_output(WRK_SAMPLE)
    assert result.requests == 14887
    assert result.rps == pytest.approx(14883.35)
    assert result.duration_s == pytest.approx(1.000245)
    assert result.error_count == 0
    assert result.latency_us["p50"] == 119 and result.latency_us["p999"] == 1365


def test_wrk_output_without_the_json_line_is_an_error() -> None:
    with pytest.raises(BenchError, match="no WRK_JSON"):
        parse_wrk_output(WRK_SAMPLE.split("WRK_JSON")[0])


def test_lua_script_quotes_body_and_headers() -> None:
    assert lua_string('a"b\\c\n') == '"a\\"b\\\\c\\010"'
    script = lua_script(refund_request(TOOL_HOST, "tok"))
    assert 'wrk.body = "{\\"amount\\":20.0,' in script
    assert 'wrk.headers["Authorization"] = "Bearer tok"' in script
    assert 'wrk.headers["Host"] = "payments.demo"' in script


def _hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])


def test_direct_bootstrap_is_the_generated_one_without_authorisation(tmp_path: Path) -> None:
    config = write_aegis_config(tmp_path, "127.0.0.1:9")
    full = render_bootstrap(config, with_ext_proc=False)
    direct = strip_authz(full)
    assert EXT_AUTHZ_FILTER in [f["name"] for f in _hcm(full)["http_filters"]]
    assert [f["name"] for f in _hcm(direct)["http_filters"]] == ["envoy.filters.http.router"]
    assert [c["name"] for c in direct["static_resources"]["clusters"]] == ["upstream_payments_demo"]
    assert GRPC_CLUSTER in [c["name"] for c in full["static_resources"]["clusters"]]
    full_hosts, direct_hosts = (
        _hcm(full)["route_config"]["virtual_hosts"],
        _hcm(direct)["route_config"]["virtual_hosts"],
    )
    assert all("typed_per_filter_config" not in vhost for vhost in direct_hosts)
    assert [(v["domains"], v["routes"]) for v in direct_hosts] == [(v["domains"], v["routes"]) for v in full_hosts]
    # Everything else (listener options, access log) is the generated configuration.
    same = {k: v for k, v in _hcm(full).items() if k not in {"http_filters", "route_config"}}
    assert same == {k: v for k, v in _hcm(direct).items() if k not in {"http_filters", "route_config"}}


def _stub_handler(status: int, body: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            data = body.encode()
            self.send_response(status)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[Target]:
    status, body = request.param
    server = ThreadingHTTPServer(("127.0.0.1", 0), _stub_handler(status, body))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Target("stub", f"127.0.0.1:{server.server_address[1]}", "127.0.0.1:9")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _stack(target: Target) -> BenchStack:
    return BenchStack(target, target, target, "tok", "127.0.0.1:9", "envoy")


@pytest.mark.parametrize("stub", [(503, '{"error":"engine_unavailable"}')], indirect=True)
def test_refuses_to_measure_error_pages(stub: Target) -> None:
    with pytest.raises(BenchError, match="refusing to measure: stub answered 503"):
        verify(_stack(stub))


@pytest.mark.parametrize("stub", [(200, UPSTREAM_BODY)], indirect=True)
def test_refuses_to_measure_when_nothing_decides(stub: Target) -> None:
    # Everything answers 200: the refund of 900 must be denied, or Aegis is not in the path.
    with pytest.raises(BenchError, match="to a refund of 900; expected 403"):
        verify(_stack(stub))


@pytest.mark.parametrize("stub", [(200, "ok"), (503, "no")], indirect=True)
def test_open_loop_counts_every_response(stub: Target) -> None:
    result = open_loop(stub.url, refund_request(TOOL_HOST, "tok"), rate=100, duration_s=0.3, connections=4)
    assert result.requests == 30
    assert result.errors["status"] == (30 if "503" in str(result.extra["statuses"]) else 0)
    assert sum(result.extra["statuses"].values()) == 30
    assert 0 < result.latency_us["min"] <= result.latency_us["p50"] <= result.latency_us["max"]


def _measurement(target: str, rps: float, p50: float, p99: float) -> Measurement:
    latency = {"p50": p50, "p90": p99, "p99": p99, "p999": p99}
    return Measurement(Scenario(target, "connections", 1), LoadResult(100, 1.0, rps, {}, latency))


def test_comparison_is_against_direct_at_the_same_load() -> None:
    (c,) = compare([_measurement("direct", 2000, 300, 900), _measurement("aegis", 500, 1300, 2900)])
    assert c.target == "aegis" and c.throughput_ratio == pytest.approx(0.25)
    assert c.added_p50_ms == pytest.approx(1.0) and c.added_p99_ms == pytest.approx(2.0)


def test_with_rounds_each_is_compared_with_its_own_direct_and_the_medians_reported() -> None:
    # Direct doubles its speed in the last round; Aegis keeps half of each round's direct.
    def run(target: str, rps: float, p50: float, round_: int) -> Measurement:
        latency = {"p50": p50, "p90": p50, "p99": 2 * p50, "p999": 3 * p50}
        return Measurement(Scenario(target, "connections", 32), LoadResult(1000, 1.0, rps, {}, latency), round=round_)

    rounds = [(1000, 300, 500, 700), (1000, 300, 500, 900), (2000, 200, 1000, 1000)]
    measurements = [
        m
        for i, (direct, d50, aegis, a50) in enumerate(rounds)
        for m in (run("direct", direct, d50, i), run("aegis", aegis, a50, i))
    ]
    (c,) = compare_rounds(measurements)
    assert c.rounds == 3 and c.throughput_ratio == pytest.approx(0.5)
    assert c.added_p50_ms == pytest.approx(0.6)  # the median of 0.4, 0.6 and 0.8 ms
    direct, aegis = summary(measurements)
    assert (direct.scenario.target, direct.result.rps, direct.result.requests) == ("direct", 1000, 3000)
    assert aegis.result.rps == 500 and aegis.result.latency_us["p50"] == 900
    assert compare_rounds(measurements[:2]) == compare(measurements[:2])  # one round: as before


def test_every_other_round_runs_each_load_level_in_the_reverse_order() -> None:
    first, second = plan(0), plan(1)
    assert sorted(first, key=repr) == sorted(second, key=repr)
    one_conn = [s.target for s in first if s.mode == "connections" and s.load == 1]
    assert one_conn == ["upstream", "direct", "floor", "aegis"]
    assert [s.target for s in second if s.mode == "connections" and s.load == 1] == one_conn[::-1]


def test_aegis_latency_splits_into_the_floor_and_its_own_work() -> None:
    runs = [_measurement("direct", 2000, 300, 900), _measurement("floor", 1000, 800, 1900)]
    floor, aegis = compare([*runs, _measurement("aegis", 500, 1300, 2900)])
    assert (floor.target, floor.throughput_ratio, floor.added_p50_ms) == ("floor", 0.5, pytest.approx(0.5))
    (line,) = floor_split([floor, aegis])
    assert "Aegis adds +1.00 ms P50 / +2.00 ms P99" in line
    assert "no-op Python Check adds +0.50 / +1.00" in line and "own work is +0.50 / +1.00 ms" in line


def test_floor_target_is_a_real_check_that_lets_everything_through(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path) as group:
        stack = start_bench_stack(group, tmp_path, envoy_concurrency=1)
        verify(stack)  # direct, floor and Aegis answer as they should (Aegis denies 900)
        assert stack.floor is not None
        before = ext_authz_counters(stack.floor).get("ok", 0)
        denied_by_aegis = refund_request(TOOL_HOST, None, 900.0)  # no token, over the limit
        response = httpx.post(
            stack.floor.url + denied_by_aegis.path, content=denied_by_aegis.body, headers=denied_by_aegis.headers
        )
        assert response.status_code == 200 and response.text == UPSTREAM_BODY
        assert ext_authz_counters(stack.floor).get("ok", 0) == before + 1  # it went through a Check


def test_nearest_rank_percentile() -> None:
    samples = [float(i) for i in range(1, 1001)]
    assert percentile(samples, 50) == 500 and percentile(samples, 99.9) == 999 and percentile(samples, 100) == 1000


def test_open_loop_drops_a_connection_the_server_closed_while_idle() -> None:
    # The 30-minute soak hung: the server closed an idle keep-alive connection, the receiving
    # loop dropped it but left it in `idle`, the sender took it again, failed, dropped it a
    # second time (KeyError from the selector) and died — and the run waited for it forever.
    with socket.create_server(("127.0.0.1", 0)) as server:
        loop = OpenLoop(server.getsockname()[:2], b"GET / HTTP/1.1\r\n\r\n", 2)
        try:
            first = loop.idle[0]
            loop._drop(first, "read")
            assert first not in loop.idle and len(loop.idle) == 2  # replaced, not reusable
            loop._drop(first, "read")  # the other thread fails on it too: no exception
            assert len(loop.idle) == 2 and loop.tally.errors["read"] == 2
        finally:
            loop.close()


def test_open_loop_reports_a_dead_sender_instead_of_waiting_for_it() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        loop = OpenLoop(server.getsockname()[:2], b"GET / HTTP/1.1\r\n\r\n", 1)
        try:
            with pytest.raises(ZeroDivisionError):
                loop.sender(time.monotonic(), 1, 0.0)  # rate 0: the sender thread dies
            assert loop.sending is False
            with pytest.raises(BenchError, match="the sender thread failed"):
                loop.receive()
        finally:
            loop.close()
