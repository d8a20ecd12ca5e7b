"""A gateway with the signed decision log on and the service's own logs captured (audit e2e tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from helpers import POLICIES, Gateway, copy_policy_dir, free_port, write_config

from extauthz.audit.keys import generate
from extauthz.config import load_config
from extauthz.supervisor import start_stack

# A shadow rule whose reason quotes an argument: rendered reasons must reach no log unmasked.
SHADOW_RULE = """
  - id: refund-strict-limit
    tools: [payments.refund]
    mode: shadow
    when: [{arg: amount, gt: 10}]
    effect: deny
    reason: refunds over 10 would be denied (customer {customer_id})
"""


def start_audited_gateway(root: Path, **audit: Any) -> tuple[Gateway, Path]:
    """Envoy + service + demo tools, ``audit.path`` = root/decisions.jsonl; returns (gateway, public key)."""
    public, _ = generate(root / "gw" / "keys" / "audit.pem")
    policies = copy_policy_dir(root / "policies", (POLICIES / "support.yaml").read_text() + SHADOW_RULE)
    upstreams = {host: f"http://127.0.0.1:{free_port()}" for host in ("payments.demo", "slack.demo", "crm.demo")}
    overrides: dict[str, Any] = {
        "upstreams": upstreams,
        "demo": {"tools": True},
        "audit": {"path": str(root / "decisions.jsonl"), "signing_key": "keys/audit.pem", "key_id": "e2e", **audit},
    }
    path = write_config(root / "gw", overrides, policy_dir=policies)
    config = load_config(path)
    stack = start_stack(config, path, log_dir=root / "logs")
    return Gateway(config, stack, httpx.Client(base_url=f"http://{config.envoy.listen}", timeout=10)), public
