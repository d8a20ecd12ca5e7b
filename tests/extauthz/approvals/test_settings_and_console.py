"""The approvals config section, console redirects and the notifier dispatcher."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import write_config

from extauthz.approvals.console import safe_next
from extauthz.approvals.notify import ApprovalCard, Dispatcher, NotifyError
from extauthz.config import load_config
from extauthz.errors import ConfigError
from extauthz.store import PendingApproval
from extauthz.store.sqlite import SqliteStore
from extauthz.telemetry import Metrics


def config_with(tmp_path: Path, approvals: dict):
    return load_config(write_config(tmp_path, {"approvals": approvals}))


def test_full_section(tmp_path: Path):
    config = config_with(
        tmp_path,
        {
            "token_ttl": "5m",
            "signing_key": "keys/override.pem",
            "console": {"approvers": {"alice": {"token_sha256": "a" * 64}}},
            "groups": {"leads": {"approvers": ["U1"], "notify": [{"slack": {"bot_token_env": "T", "channel": "C"}}]}},
        },
    ).approvals
    assert config.token_ttl_s == 300 and config.signing_key == tmp_path / "keys" / "override.pem"
    assert config.groups["leads"].notify[0].channel == "C"


@pytest.mark.parametrize(
    ("approvals", "names"),
    [
        ({"tokenttl": "5m"}, "approvals: unknown key 'tokenttl'"),
        ({"console": {"approvers": {"alice": {"token_sha256": "plain-token"}}}}, "approvals.console.approvers.alice"),
        ({"console": {"approvers": {"alice": {"token": "x"}}}}, "unknown key 'token'"),
        ({"groups": {"g": {"notify": [{"slack": {"channel": "C"}}]}}}, "approvals.groups.g.notify[0].slack"),
        ({"groups": {"g": {"notify": [{"teams": {}}]}}}, "approvals.groups.g.notify[0].teams.webhook_url"),
        ({"groups": {"g": {"notify": [{"webhook": {"url": "ftp://x"}}]}}}, "approvals.groups.g.notify[0].webhook.url"),
        ({"groups": {"g": {"notify": [{"slack": {}, "teams": {}}]}}}, "exactly one of"),
        ({"slack": {"signing_secret_env": "not a name"}}, "approvals.slack.signing_secret_env"),
        ({"ttl": "soon"}, "approvals.ttl"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, approvals: dict, names: str):
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        config_with(tmp_path, approvals)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/console/approvals/apr_1", "/console/approvals/apr_1"),
        (
            "/console/approvals/apr_1/link?action=approve&exp=1&sig=ab",
            "/console/approvals/apr_1/link?action=approve&exp=1&sig=ab",
        ),
        ("//evil.example", "/console/approvals"),
        ("https://evil.example/console", "/console/approvals"),
        ("/console\\@evil", "/console/approvals"),
        ("/consolex://evil", "/console/approvals"),
        ("/v1/operator/approvals", "/console/approvals"),
        ("/console/\r\nSet-Cookie: x", "/console/approvals"),
        (None, "/console/approvals"),
    ],
)
def test_safe_next(value, expected):
    assert safe_next(value) == expected


class Flaky:
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def requested(self, card):
        self.calls += 1
        if self.calls <= self.failures:
            raise NotifyError("flaky_http_500")
        return None

    def decided(self, card, ref):
        return None


def _card() -> ApprovalCard:
    a = PendingApproval("apr_1", "a", "t", (), "tool", "{}", "fp", "r", "why", "v1", "g", 0.0, 1e12)
    return ApprovalCard(a, console_url="http://x/console/approvals/apr_1")


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize(("failures", "sent", "failed"), [(2, 1, 0), (5, 0, 1)])
def test_dispatcher_retries_with_backoff_and_reports(tmp_path: Path, failures: int, sent: int, failed: int):
    metrics = Metrics()
    store = SqliteStore(tmp_path / "a.db")
    dispatcher = Dispatcher(store, metrics, attempts=3, backoff_s=0.01)
    dispatcher.start()
    notifier = Flaky(failures)
    try:
        assert dispatcher.submit(notifier, "requested", _card())
        _wait(
            lambda: (
                dispatcher.health()["notifiers"]["flaky"]["sent"] + dispatcher.health()["notifiers"]["flaky"]["failed"]
                > 0
            )
        )
        health = dispatcher.health()["notifiers"]["flaky"]
        assert (health["sent"], health["failed"], notifier.calls) == (sent, failed, min(failures + 1, 3))
        assert (dispatcher.health()["failing"] == ["flaky"]) is bool(failed)
        value = metrics.registry.get_sample_value
        assert value("aegis_approval_notifications_total", {"notifier": "flaky", "outcome": "retried"}) == 2
    finally:
        dispatcher.stop()
        store.close()


def test_dispatcher_drops_when_full_without_blocking(tmp_path: Path):
    metrics = Metrics()
    store = SqliteStore(tmp_path / "a.db")
    dispatcher = Dispatcher(store, metrics, attempts=1, backoff_s=0.01, max_queue=2)  # not started: nothing drains
    assert [dispatcher.submit(Flaky(0), "requested", _card()) for _ in range(3)] == [True, True, False]
    assert (
        metrics.registry.get_sample_value(
            "aegis_approval_notifications_total", {"notifier": "flaky", "outcome": "dropped"}
        )
        == 1
    )
    store.close()
