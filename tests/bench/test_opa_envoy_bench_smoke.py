"""The Aegis vs OPA-Envoy benchmark's harness: its pieces without processes (the mixed wrk
script, the mixed open-loop generator against a stub server, the OPA-Envoy bootstrap, the
plan, the goals), then one tiny real run through every system.  No timing assertions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench.mixload import lua_mix_script, open_loop_mix
from bench.opa_envoy import Settings, mix, plan
from bench.opa_envoy_report import Run, goals
from bench.opa_envoy_stack import CRM_HOST, opa_envoy_bootstrap, plugin_config
from bench.result import LoadResult
from bench.stack import REPO, TOOL_HOST, Target, write_aegis_config
from extauthz.envoyconfig import GRPC_CLUSTER, render_bootstrap


def test_wrk_mix_script_cycles_through_the_calls() -> None:
    script = lua_mix_script(mix("tok"))
    assert 'mix[1] = wrk.format("POST", "/v1/refunds", ' in script
    assert 'mix[2] = wrk.format("GET", "/tenants/acme/records/r-1", ' in script
    # The GET has an empty body, not nil (wrk.format would send the refund's body instead).
    get_line = next(line for line in script.splitlines() if line.startswith("  mix[2]"))
    assert get_line.endswith(', "")') and '["x-aegis-purpose"] = "support"' in get_line
    assert "next_index = next_index % 2 + 1" in script
    assert 'wrk.headers["Authorization"] = "Bearer tok"' in script and "done = function" in script


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, int]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        self.seen.append((self.command, self.path, length))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str, int]]]]:
    seen: list[tuple[str, str, int]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_open_loop_mix_alternates_the_calls(recorder: tuple[str, list[tuple[str, str, int]]]) -> None:
    url, seen = recorder
    result = open_loop_mix(url, mix("tok"), rate=100, duration_s=0.4, connections=4)
    assert result.requests == 40 and result.error_count == 0
    methods = sorted(m for m, _, _ in seen)
    assert methods == ["GET"] * 20 + ["POST"] * 20
    assert {(m, p, n > 0) for m, p, n in seen} == {
        ("POST", "/v1/refunds", True),
        ("GET", "/tenants/acme/records/r-1", False),
    }


def test_opa_envoy_bootstrap_is_the_aegis_one_pointed_at_the_plugin(tmp_path: Path) -> None:
    config = write_aegis_config(tmp_path, "127.0.0.1:9", hosts=(TOOL_HOST, CRM_HOST))
    target = Target("opa_envoy", "127.0.0.1:10001", "127.0.0.1:10002")
    opa = opa_envoy_bootstrap(config, target, tmp_path / "opa.log", "127.0.0.1:10003")
    aegis = render_bootstrap(config, with_ext_proc=False)
    clusters = {c["name"]: c for c in opa["static_resources"]["clusters"]}
    grpc = clusters[GRPC_CLUSTER]
    address = grpc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address == {"address": "127.0.0.1", "port_value": 10003}
    assert "health_checks" not in grpc
    aegis_grpc = next(c for c in aegis["static_resources"]["clusters"] if c["name"] == GRPC_CLUSTER)
    same = {k: v for k, v in aegis_grpc.items() if k not in {"load_assignment", "health_checks"}}
    assert same == {k: v for k, v in grpc.items() if k not in {"load_assignment", "health_checks"}}
    # The same filters (ext_authz with the body as bytes) and routes as the Aegis bootstrap.
    hcm = opa["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    aegis_hcm = aegis["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"] == aegis_hcm["http_filters"] and hcm["route_config"] == aegis_hcm["route_config"]
    plugin = plugin_config("127.0.0.1:10003")["plugins"]["envoy_ext_authz_grpc"]
    assert plugin == {"addr": "127.0.0.1:10003", "path": "aegis/opa_envoy/result"}


def test_plan_puts_direct_first_and_rotates_the_systems() -> None:
    runs = plan(Settings(1.0, 0, (200, 500), 32, 10, 1))
    assert [(load.mode, load.value) for load, _ in runs[::4]] == [("rate", 200), ("rate", 500), ("connections", 32)]
    assert [name for _, name in runs[:4]] == ["direct", "opa_envoy", "aegis", "aegis_dlp"]
    assert [name for _, name in runs[4:8]] == ["direct", "aegis", "aegis_dlp", "opa_envoy"]


def _run(target: str, mode: str, load: int, rps: float, p99: float, errors: int = 0) -> Run:
    latency = {"min": 1.0, "mean": p99, "max": p99, "p50": p99 / 2, "p90": p99, "p99": p99, "p999": p99}
    return Run(target, mode, load, LoadResult(100, 1.0, rps, {"status": errors}, latency), None, {"envoy": 0.1})


def test_goals_compare_aegis_with_opa_envoy_at_the_same_load() -> None:
    runs = [
        _run("opa_envoy", "rate", 200, 200, 3000),
        _run("aegis", "rate", 200, 200, 2000),
        _run("aegis_dlp", "rate", 200, 200, 4000),
        _run("opa_envoy", "rate", 500, 500, 3000),
        _run("aegis", "rate", 500, 490, 2500, errors=3),
        _run("aegis_dlp", "rate", 500, 500, 1000),
        _run("opa_envoy", "connections", 32, 1500, 30000),
        _run("aegis", "connections", 32, 1600, 20000),
        _run("aegis_dlp", "connections", 32, 900, 40000),
    ]
    result = goals(runs)
    assert result["aegis"]["p99_le_opa_envoy_per_rate"] == {"200": True, "500": False}  # errors meet no goal
    assert result["aegis"]["saturated_rps_ge_opa_envoy"] is True
    assert result["aegis_dlp"]["p99_le_opa_envoy_per_rate"] == {"200": False, "500": True}
    assert result["aegis_dlp"]["saturated_rps_ge_opa_envoy"] is False


def _needs(binary: Path | str | None, what: str) -> None:
    if binary is None or not Path(binary).exists():
        pytest.skip(f"{what} is missing")


@pytest.mark.e2e
@pytest.mark.parametrize("replicas", [1, 2])
def test_tiny_run_measures_both_systems(tmp_path: Path, replicas: int) -> None:
    _needs(REPO / ".tools" / "bin" / "opa-envoy-plugin", "opa-envoy-plugin (run scripts/install-opa-envoy.sh)")
    _needs(shutil.which("wrk"), "wrk (apt-get install wrk)")
    out = tmp_path / "result.json"
    argv = [sys.executable, "-m", "bench.opa_envoy", "--duration", "1", "--warmup", "0", "--rates", "40"]
    argv += ["--connections", "2", "--rss-checks", "30", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    argv += ["--aegis-replicas", str(replicas)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    # Both systems allowed the mix and decided: approval, deny, cross-tenant deny, no token.
    for system in ("opa_envoy", "aegis", "aegis_dlp"):
        assert set(result["verification"][system].values()) == {200, 202, 403, 401}
    runs = {(r["target"], r["mode"]): r for r in result["runs"]}
    assert set(runs) == {(t, m) for t in ("direct", "opa_envoy", "aegis", "aegis_dlp") for m in ("rate", "connections")}
    for (target, mode), run in runs.items():
        assert run["requests"] > 0 and run["valid"], (target, mode, run["errors"])
        if mode == "rate":
            assert run["extra"]["statuses"] == {"200": run["requests"]}
        if target != "direct":
            # Every measured request was a Check Envoy counted as ok: nothing was denied.
            assert run["ext_authz_checks"].get("ok", 0) >= run["requests"]
            assert not run["ext_authz_checks"].get("denied") and not run["ext_authz_checks"].get("error")
    vs_opa = [c for c in result["comparisons"] if "vs_opa_envoy" in c]
    assert {c["target"] for c in vs_opa} == {"aegis", "aegis_dlp"} and len(vs_opa) == 4
    memory = result["memory"]
    assert memory["opa_envoy_plugin"]["rss_mb"] > 0 and memory["aegis_service_support_policy"]["rss_mb"] > 0
    generated = memory["aegis_service_generated_policy"]
    assert generated["rules"] == 200 and generated["checks"] == 30 and generated["check_codes"].get("0", 0) > 0
    assert result["versions"]["opa_envoy_plugin"].endswith("-envoy")
    assert result["settings"]["aegis_replicas"] == replicas
    # Every Aegis service process took its share of the Checks (Envoy balances over them).
    work = tmp_path / "work"
    logs = [work / "aegis-service.log", *sorted(work.glob("aegis-service-[0-9].log"))]
    assert len(logs) == replicas
    for log in logs:
        assert log.read_text().count('"msg":"decision"') > 10, log.name
    assert "| Envoy → OPA-Envoy |" in done.stdout
