"""The ``approvals`` section of ``aegis.yaml``, validated into frozen dataclasses.

    approvals:
      ttl: 1h                      # default lifetime of a pending approval
      token_ttl: 10m               # lifetime of an override token once approved
      signing_key: keys/override.pem   # Ed25519 PEM for override tokens (created if missing)
      operator_token_file: .aegis/operator-token   # CLI/operator credential (created if missing)
      operator_token_env: AEGIS_OPERATOR_TOKEN     # …or taken from this variable
      secret_env: AEGIS_APPROVALS_SECRET           # console cookies + signed links (random if unset)
      sweep_interval: 30s
      slack: {signing_secret_env: SLACK_SIGNING_SECRET, api_url: https://slack.com/api}
      console: {approvers: {alice: {token_sha256: <hex>, email: alice@example.com}}}
      groups:
        support-leads:
          approvers: [U024BE7LH, alice@example.com, alice]
          notify:
            - slack: {bot_token_env: SLACK_BOT_TOKEN, channel: C0123}
            - teams: {webhook_url: https://…}
            - webhook: {url: https://…, secret_env: HOOK_SECRET}

Only names of environment variables and hashes appear here, never a secret itself.
This module imports nothing from the rest of Aegis but ``errors`` and ``config_fields``
(config.py imports it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extauthz.config_fields import Fields
from extauthz.errors import ConfigError

DEFAULT_TTL_S = 3600.0
DEFAULT_TOKEN_TTL_S = 600.0
DEFAULT_SWEEP_S = 30.0
DEFAULT_LINK_TTL_S = 3600.0
DEFAULT_SESSION_TTL_S = 8 * 3600.0
DEFAULT_SLACK_API = "https://slack.com/api"
DEFAULT_OPERATOR_ENV = "AEGIS_OPERATOR_TOKEN"
NOTIFIER_KINDS = ("slack", "teams", "webhook")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class NotifierSpec:
    """One notification target of a group: ``kind`` plus its options (URLs, env var names)."""

    kind: str  # slack | teams | webhook
    url: str = ""  # teams/webhook URL or Slack incoming webhook_url
    channel: str = ""  # Slack channel
    bot_token_env: str = ""  # Slack bot token (chat.postMessage / chat.update)
    secret_env: str = ""  # webhook HMAC secret


@dataclass(frozen=True)
class ApproverGroup:
    """Who may decide (Slack user ids, e-mails, console names) and whom to notify."""

    approvers: tuple[str, ...] = ()
    notify: tuple[NotifierSpec, ...] = ()


@dataclass(frozen=True)
class ConsoleApprover:
    """A console login: only the SHA-256 of the approver's token is configured."""

    name: str
    token_sha256: str
    email: str = ""


@dataclass(frozen=True)
class ApprovalsConfig:
    """Everything about human approvals."""

    ttl_s: float = DEFAULT_TTL_S
    token_ttl_s: float = DEFAULT_TOKEN_TTL_S
    signing_key: Path | None = None
    operator_token_file: Path | None = None
    operator_token_env: str = DEFAULT_OPERATOR_ENV
    secret_env: str = ""
    sweep_interval_s: float = DEFAULT_SWEEP_S
    link_ttl_s: float = DEFAULT_LINK_TTL_S
    session_ttl_s: float = DEFAULT_SESSION_TTL_S
    slack_signing_secret_env: str = ""
    slack_api_url: str = DEFAULT_SLACK_API
    console_approvers: Mapping[str, ConsoleApprover] = field(default_factory=dict)
    groups: Mapping[str, ApproverGroup] = field(default_factory=dict)
    # Notifier retries: attempts and the first backoff (doubled per attempt).
    notify_attempts: int = 4
    notify_backoff_s: float = 0.5


_TOP = {
    "ttl",
    "token_ttl",
    "signing_key",
    "operator_token_file",
    "operator_token_env",
    "secret_env",
    "sweep_interval",
    "link_ttl",
    "session_ttl",
    "slack",
    "console",
    "groups",
    "notify_attempts",
    "notify_backoff",
}


def parse_approvals(raw: Any, f: Fields) -> ApprovalsConfig:
    """Validate the raw ``approvals`` mapping; every error names the key."""
    s = f.mapping(raw, "approvals", _TOP)
    slack = f.mapping(s.get("slack"), "approvals.slack", {"signing_secret_env", "api_url"})
    console = f.mapping(s.get("console"), "approvals.console", {"approvers"})
    approvers = _console_approvers(f, console.get("approvers"))
    groups = {
        name: _group(f, f"approvals.groups.{name}", value)
        for name, value in f.mapping(s.get("groups"), "approvals.groups").items()
    }
    attempts = s.get("notify_attempts", 4)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
        raise f.fail("approvals.notify_attempts", "an integer from 1 to 10", attempts)
    return ApprovalsConfig(
        ttl_s=f.duration(s, "approvals.ttl", DEFAULT_TTL_S),
        token_ttl_s=f.duration(s, "approvals.token_ttl", DEFAULT_TOKEN_TTL_S),
        signing_key=f.file(s, "approvals.signing_key"),
        operator_token_file=f.file(s, "approvals.operator_token_file"),
        operator_token_env=f.env_name(s, "approvals.operator_token_env", DEFAULT_OPERATOR_ENV),
        secret_env=f.env_name(s, "approvals.secret_env"),
        sweep_interval_s=max(0.05, f.duration(s, "approvals.sweep_interval", DEFAULT_SWEEP_S)),
        link_ttl_s=f.duration(s, "approvals.link_ttl", DEFAULT_LINK_TTL_S),
        session_ttl_s=f.duration(s, "approvals.session_ttl", DEFAULT_SESSION_TTL_S),
        slack_signing_secret_env=f.env_name(slack, "approvals.slack.signing_secret_env"),
        slack_api_url=f.url(slack, "approvals.slack.api_url", DEFAULT_SLACK_API).rstrip("/"),
        console_approvers=approvers,
        groups=groups,
        notify_attempts=attempts,
        notify_backoff_s=f.duration(s, "approvals.notify_backoff", 0.5),
    )


def _console_approvers(f: Fields, raw: Any) -> dict[str, ConsoleApprover]:
    out: dict[str, ConsoleApprover] = {}
    for name, value in f.mapping(raw, "approvals.console.approvers").items():
        key = f"approvals.console.approvers.{name}"
        entry = f.mapping(value, key, {"token_sha256", "email"})
        digest = f.string(entry, f"{key}.token_sha256").lower()
        if not _SHA256.match(digest):
            raise f.fail(f"{key}.token_sha256", "the hex SHA-256 of the approver's token (never the token)", digest)
        out[str(name)] = ConsoleApprover(str(name), digest, f.string(entry, f"{key}.email"))
    return out


def _group(f: Fields, key: str, raw: Any) -> ApproverGroup:
    g = f.mapping(raw, key, {"approvers", "notify"})
    approvers = g.get("approvers", [])
    if not isinstance(approvers, list) or not all(isinstance(a, str) and a for a in approvers):
        raise f.fail(f"{key}.approvers", "a list of Slack user ids, e-mails or console names", approvers)
    notify = g.get("notify", [])
    if not isinstance(notify, list):
        raise f.fail(f"{key}.notify", "a list such as [{slack: {channel: C0123, bot_token_env: …}}]", notify)
    return ApproverGroup(tuple(approvers), tuple(_notifier(f, f"{key}.notify[{i}]", n) for i, n in enumerate(notify)))


def _notifier(f: Fields, key: str, raw: Any) -> NotifierSpec:
    entry = f.mapping(raw, key, set(NOTIFIER_KINDS))
    if len(entry) != 1:
        raise f.fail(key, f"exactly one of {', '.join(NOTIFIER_KINDS)}", raw)
    ((kind, value),) = entry.items()
    key = f"{key}.{kind}"
    if kind == "slack":
        s = f.mapping(value, key, {"bot_token_env", "webhook_url", "channel"})
        spec = NotifierSpec(
            "slack",
            url=f.url(s, f"{key}.webhook_url"),
            channel=f.string(s, f"{key}.channel"),
            bot_token_env=f.env_name(s, f"{key}.bot_token_env"),
        )
        if not spec.url and not (spec.bot_token_env and spec.channel):
            raise ConfigError(f"{f.path}: {key}: set bot_token_env and channel (or webhook_url)")
        return spec
    if kind == "teams":
        s = f.mapping(value, key, {"webhook_url"})
        url = f.url(s, f"{key}.webhook_url")
        if not url:
            raise f.fail(f"{key}.webhook_url", "the Teams workflow webhook URL", url)
        return NotifierSpec("teams", url=url)
    s = f.mapping(value, key, {"url", "secret_env"})
    url, secret_env = f.url(s, f"{key}.url"), f.env_name(s, f"{key}.secret_env")
    if not url or not secret_env:
        raise ConfigError(f"{f.path}: {key}: set url and secret_env (the HMAC signing secret's variable)")
    return NotifierSpec("webhook", url=url, secret_env=secret_env)
