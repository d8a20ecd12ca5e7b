"""The ``audit`` section of aegis.yaml: defaults, paths, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz.config import load_config
from extauthz.errors import ConfigError


def _with_audit(config_path: Path, text: str) -> Path:
    config_path.write_text(config_path.read_text() + "audit:\n" + text)
    return config_path


def test_no_audit_section_means_no_decision_log(config_path: Path) -> None:
    assert load_config(config_path).audit.enabled is False


def test_paths_resolve_against_the_config(config_path: Path) -> None:
    text = "  path: logs/decisions.jsonl\n  signing_key: keys/audit.pem\n  checkpoint_seconds: 5m\n  key_id: k-2025.1\n"
    audit = load_config(_with_audit(config_path, text)).audit
    assert audit.path == config_path.parent / "logs" / "decisions.jsonl"
    assert audit.signing_key == config_path.parent / "keys" / "audit.pem"
    assert (audit.checkpoint_seconds, audit.checkpoint_every, audit.key_id) == (300.0, 1000, "k-2025.1")


def test_stdout(config_path: Path) -> None:
    audit = load_config(_with_audit(config_path, "  path: '-'\n")).audit
    assert audit.stdout and audit.path is None and audit.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  pth: x\n", "audit: unknown key 'pth'"),
        ("  path: x\n  max_bytes: 0\n", "audit.max_bytes: expected a positive integer"),
        ("  path: x\n  checkpoint_every: many\n", "audit.checkpoint_every"),
        ("  path: x\n  checkpoint_seconds: soon\n", "audit.checkpoint_seconds"),
        ("  path: x\n  key_id: 'a b'\n", "audit.key_id"),
        ("  signing_key: k.pem\n", "audit.signing_key: set audit.path too"),
    ],
)
def test_errors_name_the_key(config_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(_with_audit(config_path, text))


def test_a_missing_signing_key_fails_the_service_start(config_path: Path) -> None:
    from extauthz.audit.writer import open_decision_log

    config = load_config(_with_audit(config_path, "  path: d.jsonl\n  signing_key: keys/none.pem\n"))
    with pytest.raises(ConfigError, match="aegis audit keygen"):
        open_decision_log(config.audit, None)
