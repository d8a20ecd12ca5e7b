"""A real in-process Aegis service for the Check and JWT targets.

Built once per process from a throw-away ``aegis.yaml`` (fresh dev keys, the repo's
policies, SQLite store in a temporary directory); nothing listens on a port.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from extauthz.config import load_config
from extauthz.devtokens import generate_keypair, mint_token
from extauthz.server import Service, build_service

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
SCOPES = ("payments.refund", "slack.post_message", "crm.*")


def write_fuzz_config(directory: Path, overrides: dict[str, Any] | None = None) -> Path:
    """An aegis.yaml for an in-process service (the addresses are never bound)."""
    keys = directory / "keys"
    generate_keypair(keys / "dev.pem", keys / "dev.pub.pem")
    config: dict[str, Any] = {
        "service": {"grpc": "127.0.0.1:1", "http": "127.0.0.1:2", "ext_proc": "127.0.0.1:3"},
        "identity": {
            "issuer": "https://issuer.test",
            "audience": "aegis-test",
            "public_keys": ["keys/dev.pub.pem"],
            "dev_signing_key": "keys/dev.pem",
            "max_lifetime": "1h",
            "leeway": "5s",
        },
        "policy": {"dir": str(POLICIES), "poll_interval": "0s"},
        "store": "sqlite:///aegis.db",
        "upstreams": {},
        **(overrides or {}),
    }
    path = directory / "aegis.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@cache
def fuzz_service() -> Service:
    """The process-wide service (built on first use, closed at exit)."""
    directory = Path(tempfile.mkdtemp(prefix="aegis-fuzz-"))
    service = build_service(load_config(write_fuzz_config(directory)))
    # The policy is loaded; stop the reloader now, which also ends its build worker process
    # (libFuzzer leaves with _exit, skipping atexit, and would orphan the worker).
    service.reloader.stop()

    def close() -> None:  # the order of ``aegis serve``'s shutdown
        if service.authorizer.approvals is not None:
            service.authorizer.approvals.stop()
        service.tracing.shutdown()
        service.store.close()
        shutil.rmtree(directory, ignore_errors=True)

    atexit.register(close)
    return service


def valid_token(**claims: Any) -> str:
    """A token the service accepts (support-bot of tenant acme unless overridden)."""
    base: dict[str, Any] = {"agent": "support-bot", "tenant": "acme", "scopes": list(SCOPES)}
    return mint_token(fuzz_service().config.identity, **{**base, **claims})
