"""The engine and redaction benchmarks' own logic, fast and without Envoy or OPA: the policy
generator, decision agreement between native and regopy, the reload variant, the ext_proc
bootstrap and the ticket upstream, and whose processes' CPU a redaction run reads.  No timing
assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.dlp_gateway import (
    CRM_PATH,
    SLACK_PATH,
    bench_policy_dir,
    comparisons,
    cpu_per_request,
    ext_counters,
    full_bootstrap,
    measure,
    requests,
    send_once_ready,
    start_dlp_stack,
    summary_runs,
    table,
)
from bench.dlp_gateway import Run as DlpRun
from bench.dlp_gateway import parse_args as dlp_gateway_args
from bench.engines import decisions, policy_inputs
from bench.policygen import TOOL_COUNT, allowed_call, policy_set, sample_calls, write_policy_dir
from bench.procs import ProcessGroup, total_cpu_seconds
from bench.result import LoadResult
from bench.stack import direct_bootstrap, upstream_bootstrap, write_aegis_config
from bench.ticket import ticket_json
from bench.wrk import lua_script
from extauthz.authorizer import activate
from extauthz.engine import create_engine
from extauthz.envoyconfig import EXT_PROC_CLUSTER, EXT_PROC_FILTER
from extauthz.policy.bundle import build_bundle


@pytest.mark.parametrize("rules", [10, 50])
def test_generated_policy_builds_and_engines_agree(tmp_path: Path, rules: int) -> None:
    document = policy_set(rules)
    assert len(document["rules"]) == rules
    assert len(document["tools"]) == TOOL_COUNT
    assert len({r["id"] for r in document["rules"]}) == rules
    policy = activate(build_bundle(write_policy_dir(tmp_path / "p", rules)), "native")
    inputs = policy_inputs(policy, [*sample_calls(), allowed_call()])
    native = decisions(policy.engine, inputs)
    assert native == decisions(create_engine(policy.bundle, "regopy"), inputs)
    assert {"allow", "deny"} <= {d.effect.value for d in native}
    assert native[-1].effect.value in {"allow", "sanitize"}


def test_threshold_shift_gives_a_new_version(tmp_path: Path) -> None:
    a = build_bundle(write_policy_dir(tmp_path / "a", 10))
    b = build_bundle(write_policy_dir(tmp_path / "b", 10, threshold_shift=7))
    assert a.revision != b.revision
    assert a.revision == build_bundle(write_policy_dir(tmp_path / "c", 10)).revision


def test_ext_proc_is_in_the_aegis_bootstrap_and_not_in_direct(tmp_path: Path) -> None:
    config = write_aegis_config(tmp_path, "127.0.0.1:9", policy_dir=bench_policy_dir(tmp_path / "pol"))
    aegis = json.dumps(full_bootstrap(config))
    assert EXT_PROC_FILTER in aegis and EXT_PROC_CLUSTER in aegis
    assert str(config.service.ext_proc.rsplit(":", 1)[1]) in aegis
    direct = direct_bootstrap(config, "127.0.0.1:1", "127.0.0.1:2", tmp_path / "d.log")
    hcm = direct["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert EXT_PROC_FILTER not in [f["name"] for f in hcm["http_filters"]]
    assert EXT_PROC_CLUSTER not in [c["name"] for c in direct["static_resources"]["clusters"]]


def test_upstream_answers_the_ticket_on_redaction_routes() -> None:
    boot = upstream_bootstrap("127.0.0.1:1", "127.0.0.1:2", {SLACK_PATH: ticket_json(), "/tenants/": ticket_json()})
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["match"]["prefix"] for r in routes] == [SLACK_PATH, "/tenants/", "/"]
    assert 1800 < len(ticket_json()) < 2300


def test_the_crm_read_is_a_get_with_a_purpose() -> None:
    crm = requests("tok")["crm"]
    assert crm.path == CRM_PATH and crm.method == "GET"
    script = lua_script(crm)
    assert 'wrk.method = "GET"' in script and '"x-aegis-purpose"' in script
    assert crm.raw().startswith(b"GET ")


def test_comparisons_use_the_same_call_and_load() -> None:
    def result(rps: float, p50: float) -> LoadResult:
        return LoadResult(100, 1.0, rps, {}, {"p50": p50, "p90": p50, "p99": 2 * p50, "p999": 3 * p50})

    runs = [DlpRun("slack", "direct", 1, result(1000, 300)), DlpRun("slack", "aegis", 1, result(250, 1300))]
    runs.append(DlpRun("slack", "floor", 1, result(500, 800)))
    compared = comparisons(runs)
    assert compared[("aegis", "slack", 1)] == {"throughput_ratio": 0.25, "added_p50_ms": 1.0, "added_p99_ms": 2.0}
    assert compared[("floor", "slack", 1)] == {"throughput_ratio": 0.5, "added_p50_ms": 0.5, "added_p99_ms": 1.0}
    rendered = table(runs, compared)
    assert "0.25x" in rendered and "| Envoy → no-op Check + ext_proc | 1 |" in rendered and "0.50x" in rendered


def test_rounds_compare_each_run_with_direct_of_its_own_round_and_report_medians() -> None:
    def result(rps: float, p50: float, status_errors: int = 0) -> LoadResult:
        latency = {"p50": p50, "p90": p50, "p99": 2 * p50, "p999": 3 * p50}
        return LoadResult(100, 1.0, rps, {"status": status_errors}, latency)

    # Direct got faster in round 1: against a median of direct over both rounds, Aegis's
    # round-1 figure would be wrong; against its own round's direct it is 0.25x both times.
    runs = [
        DlpRun("crm", "direct", 1, result(1000, 300), round=0),
        DlpRun("crm", "aegis", 1, result(250, 1300), cpu_us={"envoy": 300.0, "service": 200.0}, round=0, steal_pct=0.4),
        DlpRun(
            "crm",
            "aegis",
            1,
            result(500, 900, status_errors=1),
            cpu_us={"envoy": 340.0, "service": 260.0},
            round=1,
            steal_pct=9.0,
        ),
        DlpRun("crm", "direct", 1, result(2000, 100), round=1),
        DlpRun("crm", "aegis", 1, result(260, 1200), cpu_us={"envoy": 320.0, "service": 240.0}, round=2),
        DlpRun("crm", "direct", 1, result(1040, 200), round=2),
    ]
    compared = comparisons(runs)[("aegis", "crm", 1)]
    assert compared == {"throughput_ratio": 0.25, "added_p50_ms": 1.0, "added_p99_ms": 2.0, "rounds": 3}
    summary = {run.target: run for run in summary_runs(runs)}
    assert list(summary) == ["direct", "aegis"]  # first-seen order, one row each
    aegis = summary["aegis"]
    assert aegis.result.rps == 260 and aegis.result.latency_us["p50"] == 1200
    assert aegis.result.error_count == 1 and aegis.result.requests == 300
    assert aegis.cpu_us == {"envoy": 320.0, "service": 240.0} and aegis.steal_pct == 0.4
    assert not aegis.valid  # an error in any round marks the row


def test_one_round_is_reported_as_it_ran() -> None:
    run = DlpRun("slack", "aegis", 32, LoadResult(10, 1.0, 10.0, {}, {"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0}))
    assert summary_runs([run]) == [run]


def test_zero_rounds_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        dlp_gateway_args(["--rounds", "0"])
    assert "--rounds must be at least 1" in capsys.readouterr().err


def test_cpu_is_reported_per_answered_request() -> None:
    result = LoadResult(2000, 1.0, 2000.0, {}, {"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0})
    assert cpu_per_request({"envoy": 0.5, "service": 0.25}, result) == {"envoy": 250.0, "service": 125.0}
    assert cpu_per_request({"envoy": 0.5}, LoadResult(0, 1.0, 0.0, {}, result.latency_us)) == {}
    run = DlpRun("crm", "aegis", 32, result, cpu_us={"envoy": 250.0, "service": 1234.5})
    row = table([run], {}).splitlines()[-1]
    assert row.endswith("| 250 | 1,234 |"), row


def test_the_dlp_floor_makes_the_same_round_trips_as_aegis_and_changes_nothing(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path) as group:
        stack = start_dlp_stack(group, tmp_path, envoy_concurrency=1)
        assert stack.floor is not None
        # Both calls: the response headers and body.  The Slack post's request body (the one
        # Check redacted, or the floor handed back unchanged) is put in place by Envoy.
        for call, messages in (("slack", 2), ("crm", 2)):
            request = requests(stack.token)[call]
            sent: dict[str, int] = {}
            for name in ("floor", "aegis"):
                target = stack.target(name)
                before = ext_counters(target, "ext_proc.").get("ext_proc.stream_msgs_sent", 0)
                response = send_once_ready(target, request)
                assert response.status_code == 200, (name, call, response.text)
                sent[name] = ext_counters(target, "ext_proc.")["ext_proc.stream_msgs_sent"] - before
                redacted = "[REDACTED" in response.text
                assert redacted == (name == "aegis"), (name, call)  # the floor changes nothing
                if name == "floor":
                    assert response.text == ticket_json()
            assert sent == {"floor": messages, "aegis": messages}, call
        # Each target's own processes are the ones whose CPU a run reads: a CRM read through
        # the floor works its Envoy and the no-op service, not Aegis's.
        assert len({pid for roles in stack.pids.values() for pids in roles.values() for pid in pids}) == 5
        aegis_service = stack.pids["aegis"]["service"]
        idle_before = total_cpu_seconds(aegis_service)
        run = measure(stack, "crm", "floor", 4, 1.0, tmp_path)
        assert run.valid and run.counters and run.counters["ext_proc.stream_msgs_sent"] >= 2 * run.result.requests
        assert run.cpu_us["envoy"] > 0 and run.cpu_us["service"] > 0, run.cpu_us
        assert total_cpu_seconds(aegis_service) - idle_before < run.cpu_us["service"] * run.result.requests / 1e6
