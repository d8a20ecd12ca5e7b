"""Slack request signing, interaction parsing and the webhook signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse

import pytest

from extauthz.approvals.slack import (
    SlackRequestError,
    parse_interaction,
    slack_signature,
    verify_slack_request,
)
from extauthz.approvals.webhook import webhook_signature

SECRET = b"8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_531_420_618.0
BODY = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather&text=94070"


def test_slack_signature_matches_the_documented_construction():
    expected = "v0=" + hmac.new(SECRET, b"v0:1531420618:" + BODY, hashlib.sha256).hexdigest()
    assert slack_signature(SECRET, "1531420618", BODY) == expected
    verify_slack_request(SECRET, "1531420618", expected, BODY, NOW)


@pytest.mark.parametrize(
    ("verify_with", "timestamp", "signed_with", "code"),
    [
        (SECRET, "1531420618", b"other-secret", "bad_signature"),
        (SECRET, str(int(NOW) - 301), SECRET, "stale_timestamp"),
        (SECRET, str(int(NOW) + 301), SECRET, "stale_timestamp"),
        (SECRET, "abc", SECRET, "stale_timestamp"),
        (SECRET, None, SECRET, "missing_signature"),
        (b"", "1531420618", SECRET, "slack_not_configured"),
    ],
)
def test_slack_signature_refusals(verify_with, timestamp, signed_with, code):
    signature = slack_signature(signed_with, timestamp, BODY) if timestamp else None
    with pytest.raises(SlackRequestError) as refused:
        verify_slack_request(verify_with, timestamp, signature, BODY, NOW)
    assert (refused.value.status, refused.value.code) == (401, code)


def _form(payload) -> bytes:
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return urllib.parse.urlencode({"payload": raw}).encode()


GOOD = {"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "approve", "value": "apr_1"}]}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"payload=%7Bnot-json", "malformed_payload"),
        (b"nothing=here", "malformed_payload"),
        (b"\xff\xfe", "malformed_payload"),
        (_form({**GOOD, "type": "view_submission"}), "unsupported_interaction"),
        (_form({**GOOD, "user": {}}), "malformed_payload"),
        (_form({**GOOD, "actions": []}), "malformed_payload"),
        (_form({**GOOD, "actions": [{"action_id": "delete", "value": "apr_1"}]}), "unknown_action"),
        (_form({**GOOD, "actions": [{"action_id": "approve", "value": "../etc"}]}), "malformed_payload"),
        (_form([1, 2]), "unsupported_interaction"),
    ],
)
def test_malformed_interactions_are_400_with_a_reason(body, code):
    with pytest.raises(SlackRequestError) as refused:
        parse_interaction(body)
    assert (refused.value.status, refused.value.code) == (400, code)


def test_interaction_is_parsed():
    action = parse_interaction(_form(GOOD))
    assert (action.user_id, action.action, action.approval_id) == ("U1", "approve", "apr_1")


def test_webhook_signature():
    body = b'{"event":"approval.requested"}'
    expected = hmac.new(b"s", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook_signature(b"s", "1700000000", body) == f"v1={expected}"
