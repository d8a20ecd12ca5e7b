"""DLP inline through real Envoy: ext_authz obligations → ext_proc redaction of both bodies."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import POLICIES, Gateway, copy_policy_dir, start_gateway

from extauthz.metadata import MAX_REQUEST_BODY_HANDED

pytestmark = pytest.mark.e2e

ALWAYS_OPEN = '      - {days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}'
SSN, CARD, EMAIL = "123-45-6789", "4111 1111 1111 1111", "jane.customer@example.com"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # The starter policy with business hours that are always open, so Slack posts are judged
    # on their content whatever the clock says; every response also gets SECRET redaction.
    policy = (POLICIES / "support.yaml").read_text()
    policy = policy.replace('      - {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}', ALWAYS_OPEN)
    root = tmp_path_factory.mktemp("dlp")
    policies = copy_policy_dir(root / "policies", policy)
    gw = start_gateway(root / "gw", policy_dir=policies, extra={"dlp": {"response_detectors": ["SECRET"]}})
    try:
        yield gw
    finally:
        gw.client.close()
        gw.stack.stop()


def crm(gw: Gateway, **headers: str) -> httpx.Response:
    # httpx asks for gzip by default; plain bytes make content-length checkable directly.
    headers = {"x-aegis-purpose": "support", "accept-encoding": "identity", **headers}
    return gw.call("GET", "crm.demo", "/tenants/acme/records/r-1", headers=headers)


def test_ssn_in_a_slack_post_never_reaches_slack(gateway):
    text = f"Customer {EMAIL} verified with SSN {SSN}, card {CARD}"
    response = gateway.call("POST", "slack.demo", "/api/chat.postMessage", json={"channel": "#support", "text": text})
    assert response.status_code == 200
    decision_id = response.headers["x-aegis-decision-id"]
    seen = [r for r in gateway.received("slack.demo") if r["headers"].get("x-aegis-decision-id") == decision_id]
    assert len(seen) == 1
    body = seen[0]["body"]
    for value in (SSN, CARD, EMAIL):
        assert value not in body
    sent = json.loads(body)
    assert sent["channel"] == "#support"  # structure kept; only PII changed
    assert "[REDACTED:SSN]" in sent["text"]
    assert int(seen[0]["headers"]["content-length"]) == len(body.encode())


def ext_proc_counters(gw: Gateway) -> dict[str, int]:
    text = httpx.get(f"http://{gw.config.envoy.admin}/stats", params={"filter": "ext_proc"}, timeout=5).text
    counters: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stat = name.rsplit("ext_proc.", 1)[-1]  # summed over the listener's ext_proc instances
            counters[stat] = counters.get(stat, 0) + int(value)
    return counters


def slack_post(gw: Gateway, text: str) -> tuple[httpx.Response, dict[str, Any], dict[str, int]]:
    """A Slack post, what the tool received, and the ext_proc messages it cost."""
    before = ext_proc_counters(gw)
    response = gw.call("POST", "slack.demo", "/api/chat.postMessage", json={"channel": "#support", "text": text})
    after = ext_proc_counters(gw)
    decision_id = response.headers["x-aegis-decision-id"]
    [seen] = [r for r in gw.received("slack.demo") if r["headers"].get("x-aegis-decision-id") == decision_id]
    return response, seen, {key: after[key] - before.get(key, 0) for key in after}


def test_check_redacts_the_request_and_envoy_puts_it_in_place_so_a_slack_post_costs_two_messages(gateway):
    response, seen, cost = slack_post(gateway, f"Customer {EMAIL} verified with SSN {SSN}")
    assert response.status_code == 200
    # Response headers and body only: Envoy's Lua filter put the body Check redacted in place.
    assert cost["stream_msgs_sent"] == 2 and cost["streams_started"] == 1
    assert SSN not in seen["body"] and EMAIL not in seen["body"]
    assert json.loads(seen["body"])["channel"] == "#support"
    # The replaced body is framed: a content-length, no chunking.
    assert int(seen["headers"]["content-length"]) == len(seen["body"].encode())
    assert "transfer-encoding" not in seen["headers"]
    entry = gateway.access_log(response.headers["x-aegis-decision-id"])
    counts = dict(item.split(":") for item in entry["redactions"].split(","))
    assert counts["SSN"] == "1" and counts["EMAIL"] == "1"  # the request's, counted by the response's stream
    assert SSN not in json.dumps(entry) and EMAIL not in json.dumps(entry)


def test_a_chunked_post_reaches_the_tool_redacted_and_framed(gateway):
    body = json.dumps({"channel": "#support", "text": f"Customer {EMAIL} verified with SSN {SSN}"}).encode()
    before = ext_proc_counters(gateway)
    response = gateway.call(
        "POST",
        "slack.demo",
        "/api/chat.postMessage",
        content=iter([body[:20], body[20:]]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200
    assert ext_proc_counters(gateway)["stream_msgs_sent"] - before.get("stream_msgs_sent", 0) == 2
    decision_id = response.headers["x-aegis-decision-id"]
    [seen] = [r for r in gateway.received("slack.demo") if r["headers"].get("x-aegis-decision-id") == decision_id]
    assert SSN not in seen["body"] and EMAIL not in seen["body"]
    assert int(seen["headers"]["content-length"]) == len(seen["body"].encode())
    assert "transfer-encoding" not in seen["headers"]


def test_a_post_with_nothing_to_redact_goes_through_as_sent(gateway):
    text = "Customer verified, refund issued"
    response, seen, cost = slack_post(gateway, text)
    assert response.status_code == 200
    assert json.loads(seen["body"]) == {"channel": "#support", "text": text}
    assert seen["headers"]["content-length"] == str(len(seen["body"].encode()))  # the agent's own framing
    assert cost["stream_msgs_sent"] == 2


def test_a_body_too_big_to_hand_over_is_redacted_by_the_request_body_message(gateway):
    text = f"Customer {EMAIL} verified with SSN {SSN} " + "x" * MAX_REQUEST_BODY_HANDED
    response, seen, cost = slack_post(gateway, text)
    assert response.status_code == 200
    assert cost["stream_msgs_sent"] == 4  # request headers, request body, response headers and body
    assert SSN not in seen["body"] and EMAIL not in seen["body"]
    assert int(seen["headers"]["content-length"]) == len(seen["body"].encode())


def test_crm_record_reaches_the_agent_without_ssn_dob_full_name(gateway):
    response = crm(gateway)
    assert response.status_code == 200
    record = response.json()
    for field in ("ssn", "dob", "full_name"):
        assert record[field].startswith("[REDACTED"), field
    assert record["email"] == EMAIL  # not named by the obligations: untouched
    assert record["tenant_id"] == "acme"
    assert int(response.headers["content-length"]) == len(response.content)
    entry = gateway.access_log(response.headers["x-aegis-decision-id"])
    assert entry["decision"] == "sanitize"
    counts = dict(item.split(":") for item in entry["redactions"].split(","))
    assert sum(int(n) for n in counts.values()) >= 3  # types and counts only
    assert SSN not in json.dumps(entry)
    metrics = httpx.get(f"http://{gateway.config.service.http}/metrics", timeout=5).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("aegis_redactions_total{") and 'tool="crm.get_record"' in line
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) >= 3
    assert SSN not in metrics


def test_a_clean_call_is_untouched_byte_for_byte(gateway):
    body = b'{"amount":20.0,"currency":"USD","customer_id":"c-1"}'
    response = gateway.call(
        "POST", "payments.demo", "/v1/refunds", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    decision_id = response.headers["x-aegis-decision-id"]
    seen = [r for r in gateway.received("payments.demo") if r["headers"].get("x-aegis-decision-id") == decision_id]
    assert seen[0]["body"].encode() == body
    direct = httpx.post(
        f"{gateway.config.upstreams['payments.demo']}/v1/refunds",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert set(response.json()) == set(direct.json())


def test_gzip_responses_are_redacted_and_recompressed(gateway):
    headers = {
        "host": "crm.demo",
        "authorization": f"Bearer {gateway.token()}",
        "x-aegis-purpose": "support",
        "accept-encoding": "gzip",
    }
    with gateway.client.stream("GET", "/tenants/acme/records/r-1", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        raw = b"".join(response.iter_raw())
    assert int(response.headers["content-length"]) == len(raw)
    record = json.loads(gzip.decompress(raw))
    assert record["ssn"].startswith("[REDACTED") and record["dob"].startswith("[REDACTED")


def test_sse_streams_are_redacted_across_chunk_boundaries(gateway):
    with gateway.client.stream(
        "GET",
        "/tenants/acme/records/r-1",
        headers={
            "host": "crm.demo",
            "authorization": f"Bearer {gateway.token()}",
            "x-aegis-purpose": "support",
            "accept": "text/event-stream",
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = b"".join(response.iter_bytes()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    fields = {k: v for event in events for k, v in event.items()}
    assert fields["ssn"].startswith("[REDACTED")
    assert fields["full_name"].startswith("[REDACTED")
    assert "Jane Q. Customer" not in text and '"123-45-6789"' not in text  # the ssn field's value
    assert fields["email"] == EMAIL


def test_default_secret_redaction_applies_without_a_rule(gateway):
    # No rule sanitizes refunds, but dlp.response_detectors applies SECRET to every response;
    # the payments tool echoes the request, so a key smuggled in customer_id comes back.
    key = "AKIAIOSFODNN7EXAMPLE"
    response = gateway.call(
        "POST", "payments.demo", "/v1/refunds", json={"amount": 5, "currency": "USD", "customer_id": key}
    )
    assert response.status_code == 200
    assert key not in response.text
    assert response.json()["status"] == "succeeded"


def test_a_tool_response_cannot_smuggle_a_secret_in_odd_encodings(gateway):
    # docs/security.md "Response-side encodings": the payments tool echoes customer_id, so the
    # response carries what the agent sent — here AWS key ids written with a zero-width space
    # inside and in full-width letters, which the tool's JSON writes as \\u escapes.  The default
    # SECRET redaction must see through all three encodings on the way back to the agent.
    zero_width = "AKIA\u200bIOSFODNN7EXAMPLE"
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "AKIAIOSFODNN7EXAMPL2")
    for smuggled in (zero_width, full_width):
        body = {"amount": 5, "currency": "USD", "customer_id": smuggled}
        response = gateway.call(
            "POST", "payments.demo", "/v1/refunds", json=body, headers={"accept-encoding": "identity"}
        )
        assert response.status_code == 200
        refund = response.json()
        assert refund["customer_id"] == "[REDACTED:SECRET]", smuggled
        assert refund["request"]["customer_id"] == "[REDACTED:SECRET]"
        assert smuggled not in response.text and "IOSFODNN7" not in response.text
        assert int(response.headers["content-length"]) == len(response.content)


def test_an_agent_cannot_switch_redaction_off_with_headers(gateway):
    # Envoy picks the ext_proc instance from Check's dynamic metadata, which the agent cannot
    # write: neither the header marker of earlier versions nor a header named like the
    # metadata key skips redaction.
    response = crm(gateway, **{"x-aegis-clean": "1", "body_phases": "none", "x-aegis-body-phases": "none"})
    assert response.status_code == 200
    assert response.json()["ssn"].startswith("[REDACTED")


def test_clean_calls_never_open_an_ext_proc_stream(gateway):
    before = httpx.get(f"http://{gateway.config.envoy.admin}/stats?filter=ext_proc.streams_started").text
    response = gateway.call(
        "POST", "payments.demo", "/v1/refunds", json={"amount": 5, "currency": "USD", "customer_id": "c-2"}
    )
    assert response.status_code == 200
    seen = [
        r
        for r in gateway.received("payments.demo")
        if r["headers"].get("x-aegis-decision-id") == response.headers["x-aegis-decision-id"]
    ]
    assert seen[0]["headers"]["content-length"] == str(len(seen[0]["body"].encode()))
    after = httpx.get(f"http://{gateway.config.envoy.admin}/stats?filter=ext_proc.streams_started").text
    # This gateway applies SECRET to every response, so even clean calls go through ext_proc here.
    assert after != before


# --- bodies over dlp.max_body_bytes: 413 by default, unredacted only where the policy says so ----

OVER_LIMIT_BYTES = 64  # every CRM record and Slack post below is larger


@pytest.fixture(scope="module")
def small_limit_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # The starter policy, but the CRM rule lets an over-limit record through unredacted; the
    # Slack rule keeps the default (block).
    policy = (POLICIES / "support.yaml").read_text()
    policy = policy.replace('      - {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}', ALWAYS_OPEN)
    before = "    redact: {fields: [ssn, dob, full_name]}"
    assert before in policy
    policy = policy.replace(before, "    redact: {fields: [ssn, dob, full_name], over_limit: pass}")
    root = tmp_path_factory.mktemp("dlp-limit")
    policies = copy_policy_dir(root / "policies", policy)
    gw = start_gateway(root / "gw", policy_dir=policies, extra={"dlp": {"max_body_bytes": OVER_LIMIT_BYTES}})
    try:
        yield gw
    finally:
        gw.client.close()
        gw.stack.stop()


def test_over_limit_response_passes_unredacted_only_when_the_policy_allows_it(small_limit_gateway):
    gw = small_limit_gateway
    response = crm(gw)
    assert response.status_code == 200
    assert len(response.content) > OVER_LIMIT_BYTES
    assert response.json()["ssn"] == SSN  # passed as the upstream sent it: the policy said so
    entry = gw.access_log(response.headers["x-aegis-decision-id"])
    assert entry["decision"] == "sanitize"
    assert entry["dlp_over_limit"] == "response"  # operators see every such pass
    assert SSN not in json.dumps(entry)
    metrics = httpx.get(f"http://{gw.config.service.http}/metrics", timeout=5).text
    passed = [
        line
        for line in metrics.splitlines()
        if line.startswith("aegis_redaction_over_limit_passed_total{") and 'tool="crm.get_record"' in line
    ]
    assert passed and float(passed[0].rsplit(" ", 1)[1]) >= 1


def test_over_limit_request_is_refused_by_default(small_limit_gateway):
    gw = small_limit_gateway
    text = f"Customer {EMAIL} verified with SSN {SSN}, card {CARD}"
    response = gw.call("POST", "slack.demo", "/api/chat.postMessage", json={"channel": "#support", "text": text})
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert all(SSN not in r["body"] for r in gw.received("slack.demo"))  # never reached the tool
