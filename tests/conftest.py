"""Shared fixtures: free ports, dev keys, and aegis.yaml files written for each test."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, overrides: dict[str, Any] | None = None, *, policy_dir: Path | None = None) -> Path:
    """An aegis.yaml on free loopback ports with fresh dev keys, the repo's policies by default."""
    from extauthz.devtokens import generate_keypair

    keys = directory / "keys"
    if not (keys / "dev.pem").exists():
        generate_keypair(keys / "dev.pem", keys / "dev.pub.pem")
    config: dict[str, Any] = {
        "envoy": {"listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}", "access_log": str(directory / "access.log")},
        "service": {"grpc": f"127.0.0.1:{free_port()}", "http": f"127.0.0.1:{free_port()}"},
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


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)
