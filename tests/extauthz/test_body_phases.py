"""Check names the ext_proc instance for each call (``body_phases``), or none.

Envoy runs an ext_proc instance only when this value in Check's dynamic metadata names it
(``envoyconfig.filters.ext_proc_filter``), so it decides how many ext_proc messages a call
costs.
"""

from __future__ import annotations

import pytest

from extauthz.answer import Answer
from extauthz.envoy_authz import body_phases, response_from_answer
from extauthz.metadata import (
    BODY_PHASES,
    MD_BODY_PHASES,
    MD_REDACT,
    MD_USAGE,
    PHASES_BOTH_BODIES,
    PHASES_RESPONSE,
)
from extauthz.tools import HttpRequest

REDACT = {MD_REDACT: '{"fields":["ssn"],"detectors":[]}'}
USAGE = {MD_USAGE: "[]"}


def request(body: bytes = b"", **headers: str) -> HttpRequest:
    return HttpRequest("POST" if body else "GET", "crm.demo", "/r", "", headers, body)


def allowed(**metadata: str) -> Answer:
    return Answer(200, "d-1", metadata=metadata)


def test_a_call_with_nothing_to_redact_or_meter_opens_no_stream() -> None:
    assert body_phases(allowed(), request(b'{"a":1}')) is None


def test_denials_open_no_stream_even_with_obligations() -> None:
    # The local reply goes back through the ext_proc filters: no instance may run for it.
    for status in (403, 202, 401, 429):
        assert body_phases(Answer(status, "d-1", metadata=REDACT), request(b'{"a":1}')) is None


def test_rule_obligations_redact_both_bodies_when_there_is_a_request_body() -> None:
    assert body_phases(allowed(**REDACT), request(b'{"text":"x"}')) == PHASES_BOTH_BODIES


def test_without_a_request_body_only_the_response_is_processed() -> None:
    # Check saw the whole body; with none, a request message would only cost a round trip.
    assert body_phases(allowed(**REDACT), request()) == PHASES_RESPONSE


@pytest.mark.parametrize(
    ("metadata", "always"), [(USAGE, False), ({}, True)], ids=["usage to meter", "default response detectors"]
)
def test_response_only_work_skips_the_request_body(metadata: dict[str, str], always: bool) -> None:
    answer = allowed(**metadata)
    assert body_phases(answer, request(b'{"a":1}'), always_process_bodies=always) == PHASES_RESPONSE


@pytest.mark.parametrize("phases", BODY_PHASES)
def test_the_choice_travels_in_the_dynamic_metadata_not_in_headers(phases: str) -> None:
    response = response_from_answer(allowed(**REDACT), phases)
    assert response.dynamic_metadata.fields[MD_BODY_PHASES].string_value == phases
    upstream = {h.header.key for h in response.ok_response.headers}
    assert upstream == {"x-aegis-decision-id"}
    # The agent's credentials stop here, whatever the phases.
    assert set(response.ok_response.headers_to_remove) == {"authorization", "x-aegis-override"}


def test_no_choice_leaves_no_key_for_envoys_matchers() -> None:
    assert MD_BODY_PHASES not in response_from_answer(allowed(), None).dynamic_metadata.fields
    denied = response_from_answer(Answer(403, "d-1", body={"error": "denied"}, metadata=REDACT), None)
    assert MD_BODY_PHASES not in denied.dynamic_metadata.fields
