"""``bench.cold`` end to end, briefly: the workloads it measures are the real ones (allowed,
redacting), and its report holds every workload on both sides.  No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cold


def test_the_workloads_decide_and_redact(tmp_path: Path) -> None:
    with cold.workloads(tmp_path) as loads:
        assert [w.name for w in loads] == ["refund", "slack check", "slack stream", "crm stream"]
        # The Slack post's Check redacts the request body and hands it to Envoy; the no-op hands it back.
        aegis = cold.external_auth_pb2.CheckResponse.FromString(cold.answered(loads[1].aegis))
        floor = cold.external_auth_pb2.CheckResponse.FromString(cold.answered(loads[1].floor))
        handed, unchanged = (r.dynamic_metadata.fields["request_body"].string_value for r in (aegis, floor))
        assert cold.SSN in unchanged and cold.SSN not in handed and handed
        # The floor's stream changes nothing; Aegis's replaces the ticket.
        assert cold.redacted_body(loads[2].floor()) == b""
        assert cold.SSN.encode() not in cold.redacted_body(loads[2].aegis())  # detectors: every SSN
        crm = json.loads(cold.redacted_body(loads[3].aegis()))  # field rules: the customer's
        assert crm["customer"]["ssn"] != cold.SSN and crm["order"]["order_id"] == "ORD-1200-88412"


def test_a_broken_workload_stops_the_benchmark() -> None:
    with pytest.raises(RuntimeError, match="the handler failed"):
        cold.answered(lambda: (13, "aegis: Check failed"))
    with pytest.raises(RuntimeError, match="did not redact"):
        cold.verify(lambda: b"", lambda: [([b""], True)], lambda: [([b""], True)])  # nothing put in place


def test_the_report_has_both_sides_of_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "cold.json"
    assert cold.main(["--samples", "5", "--evict-mb", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"refund", "slack check", "slack stream", "crm stream"}
    for sides in report["results"].values():
        for side in ("floor", "aegis"):
            measured = sides[side]
            assert measured["warm_us"] > 0 and 0 < measured["evicted_p25_us"] <= measured["evicted_p90_us"]
