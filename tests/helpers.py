"""Test helpers: free ports, dev keys, aegis.yaml files, policy directories, running gateways."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from extauthz.config import AegisConfig, load_config
from extauthz.devtokens import mint_token
from extauthz.ports import free_loopback_port
from extauthz.supervisor import Stack, start_stack

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"


def free_port() -> int:
    return free_loopback_port()


def write_config(directory: Path, overrides: dict[str, Any] | None = None, *, policy_dir: Path | None = None) -> Path:
    """An aegis.yaml on free loopback ports with fresh dev keys, the repo's policies by default."""
    from extauthz.devtokens import generate_keypair

    keys = directory / "keys"
    if not (keys / "dev.pem").exists():
        generate_keypair(keys / "dev.pem", keys / "dev.pub.pem")
    config: dict[str, Any] = {
        "envoy": {
            "listen": f"127.0.0.1:{free_port()}",
            "admin": f"127.0.0.1:{free_port()}",
            "access_log": str(directory / "access.log"),
        },
        "service": {
            "grpc": f"127.0.0.1:{free_port()}",
            "http": f"127.0.0.1:{free_port()}",
            "ext_proc": f"127.0.0.1:{free_port()}",
        },
        "identity": {
            "issuer": "https://issuer.test",
            "audience": "aegis-test",
            "public_keys": ["keys/dev.pub.pem"],
            "dev_signing_key": "keys/dev.pem",
            "max_lifetime": "1h",
            "leeway": "5s",
        },
        "policy": {"dir": str(policy_dir or POLICIES)},
        "store": "sqlite:///aegis.db",
        "upstreams": {},
    }
    for section, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    path = directory / "aegis.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def copy_policy_dir(target: Path, *yaml_texts: str, rego: dict[str, str] | None = None) -> Path:
    """A policy directory with the repo's Rego library and the given YAML files."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(POLICIES / "lib", target / "lib", dirs_exist_ok=True)
    for index, text in enumerate(yaml_texts):
        (target / f"p{index}.yaml").write_text(text, encoding="utf-8")
    for name, text in (rego or {}).items():
        (target / name).write_text(text, encoding="utf-8")
    return target


SCOPES = ["payments.refund", "slack.post_message", "crm.*"]


@dataclass
class Gateway:
    """A running stack and helpers to call it like an agent would."""

    config: AegisConfig
    stack: Stack
    client: httpx.Client

    def token(self, **kw: Any) -> str:
        base: dict[str, Any] = {"agent": "support-bot", "tenant": "acme", "scopes": SCOPES}
        return mint_token(self.config.identity, **{**base, **kw})

    def call(
        self, method: str, host: str, path: str, *, token: str | None = None, auth: bool = True, **kw: Any
    ) -> httpx.Response:
        headers = {"host": host, **kw.pop("headers", {})}
        if auth:
            headers["authorization"] = f"Bearer {token or self.token()}"
        return self.client.request(method, path, headers=headers, **kw)

    def received(self, host: str) -> list[dict[str, Any]]:
        """What the upstream tool server for ``host`` has received so far."""
        url = self.config.upstreams[host]
        return list(httpx.get(f"{url}/_received", timeout=5).json())

    def access_log(self, decision_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The Envoy access log entry of one call (Envoy flushes the file every 500 ms)."""
        path = Path(self.config.envoy.access_log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                for line in path.read_text().splitlines():
                    if decision_id in line:
                        return dict(json.loads(line))
            time.sleep(0.1)
        raise AssertionError(f"no access log line for {decision_id}")


def start_gateway(
    directory: Path, *, policy_dir: Path | None = None, extra: dict[str, Any] | None = None, replicas: int = 1
) -> Gateway:
    upstreams = {host: f"http://127.0.0.1:{free_port()}" for host in ("payments.demo", "slack.demo", "crm.demo")}
    overrides: dict[str, Any] = {"upstreams": upstreams, "demo": {"tools": True}, **(extra or {})}
    path = write_config(directory, overrides, policy_dir=policy_dir)
    config = load_config(path)
    stack = start_stack(config, path, replicas=replicas)
    return Gateway(config, stack, httpx.Client(base_url=f"http://{config.envoy.listen}", timeout=10))
