"""Assembly: ``build_approvals`` turns ``aegis.yaml`` into a ready ``ApprovalService``.

Also the operator credential both sides read: the service keeps only its SHA-256; the CLI
reads the token itself from ``approvals.operator_token_env`` or ``operator_token_file``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from extauthz.approvals.console import console_routes
from extauthz.approvals.notify import Dispatcher, Notifier
from extauthz.approvals.routes import approval_routes
from extauthz.approvals.service import ApprovalService
from extauthz.approvals.settings import ApprovalsConfig, NotifierSpec
from extauthz.approvals.slack import SlackNotifier
from extauthz.approvals.teams import TeamsNotifier
from extauthz.approvals.tokens import OverrideTokens, SignedLinks, load_or_create_key, secret_from_env
from extauthz.approvals.webhook import WebhookNotifier
from extauthz.errors import ConfigError
from extauthz.identity import TokenVerifier
from extauthz.store import Store
from extauthz.telemetry import Metrics


def _notifier(spec: NotifierSpec, config: ApprovalsConfig) -> Notifier:
    if spec.kind == "slack":
        return SlackNotifier(spec, config.slack_api_url)
    if spec.kind == "teams":
        return TeamsNotifier(spec)
    return WebhookNotifier(spec)


def build_approvals(config: ApprovalsConfig, store: Store, metrics: Metrics, base_url: str) -> ApprovalService:
    """The approval service for this config (threads not started: call ``start``)."""
    # httpx logs every request URL at INFO; webhook URLs (Teams, Slack) embed credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    notifiers: dict[str, Sequence[Notifier]] = {
        name: [_notifier(spec, config) for spec in group.notify] for name, group in config.groups.items()
    }
    secret = secret_from_env(config.secret_env)
    return ApprovalService(
        config,
        store,
        metrics,
        base_url=base_url,
        tokens=OverrideTokens(load_or_create_key(config.signing_key)),
        links=SignedLinks(secret, base_url, config.link_ttl_s),
        dispatcher=Dispatcher(store, metrics, attempts=config.notify_attempts, backoff_s=config.notify_backoff_s),
        notifiers=notifiers,
        secret=secret,
    )


def read_operator_token(config: ApprovalsConfig, env: Mapping[str, str] | None = None, *, create: bool = False) -> str:
    """The operator token: the env variable, else the token file (created 0600 if asked)."""
    env = os.environ if env is None else env
    if config.operator_token_env and env.get(config.operator_token_env):
        return env[config.operator_token_env]
    path: Path | None = config.operator_token_file
    if path is None:
        return ""
    if not path.exists():
        if not create:
            return ""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"approvals.operator_token_file: cannot read {path}: {exc.strerror}") from exc


def max_pending_for(bundle_data: Mapping[str, Any], tool: str, rule_id: str) -> int | None:
    """The rule's ``approval.max_pending_per_agent`` from the bundle data (None: no budget)."""
    for rule in bundle_data.get("rules_by_tool", {}).get(tool, ()):
        if rule.get("id") == rule_id:
            limit = (rule.get("approval") or {}).get("max_pending_per_agent")
            return int(limit) if isinstance(limit, int) and limit > 0 else None
    return None


def http_routes(service: ApprovalService, verifier: TokenVerifier, operator_token: str) -> list[BaseRoute]:
    """Every approvals route: agent status, operator API, Slack interactions, console."""
    return [*approval_routes(service, verifier, operator_token), *console_routes(service, verifier)]


def service_routes(service: ApprovalService, verifier: TokenVerifier) -> list[BaseRoute]:
    """``http_routes`` with the operator token from config (the token file is created if missing)."""
    return http_routes(service, verifier, read_operator_token(service.config, create=True))
