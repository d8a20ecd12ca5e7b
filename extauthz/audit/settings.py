"""The ``audit`` section of ``aegis.yaml``: where the decision log goes and how it is signed.

    audit:
      path: /var/log/aegis/decisions.jsonl   # "-" for stdout; unset: no decision log
      signing_key: keys/audit.pem            # Ed25519 private key (aegis audit keygen)
      key_id: audit-2025-01                  # label of the key (default: its fingerprint)
      max_bytes: 104857600                   # rotate the file beyond this size
      checkpoint_every: 1000                 # signed checkpoint every N entries…
      checkpoint_seconds: 60                 # …or every T seconds (and always at close)
      queue_size: 10000                      # records held between the hot path and the writer
      sync: true                             # answer only once the record is written (see writer)

This module imports nothing from the rest of Aegis but ``errors`` (config.py imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.errors import ConfigError

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_CHECKPOINT_EVERY = 1000
DEFAULT_CHECKPOINT_SECONDS = 60.0
DEFAULT_QUEUE_SIZE = 10_000
STDOUT = "-"
_KEYS = {"path", "signing_key", "key_id", "max_bytes", "checkpoint_every", "checkpoint_seconds", "queue_size", "sync"}


@dataclass(frozen=True)
class AuditConfig:
    """The decision log's settings; ``path`` None means no decision log."""

    path: Path | None = None
    stdout: bool = False
    signing_key: Path | None = None
    key_id: str = ""
    max_bytes: int = DEFAULT_MAX_BYTES
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    queue_size: int = DEFAULT_QUEUE_SIZE
    # True: an answer waits until its record is written (a killed service loses no record of
    # a call it let through); False: once queued (saves the wait, loses the last few on a kill).
    sync: bool = True

    @property
    def enabled(self) -> bool:
        return self.stdout or self.path is not None


def parse_audit(
    raw: Any,
    config_path: Path,
    resolve: Callable[[str], Path],
    parse_duration: Callable[[object], float],
) -> AuditConfig:
    """Validate the raw ``audit`` mapping; ConfigError names the key and the bad value."""

    def fail(key: str, expected: str, value: object) -> ConfigError:
        return ConfigError(f"{config_path}: audit.{key}: expected {expected}, got {value!r}")

    if raw is None:
        return AuditConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: audit: expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{config_path}: audit: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))})")

    def string(key: str) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise fail(key, "a string", value)
        return value

    def positive(key: str, default: int) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(key, "a positive integer", value)
        return value

    path, key, key_id = string("path"), string("signing_key"), string("key_id")
    if key_id and not key_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise fail("key_id", "letters, digits, '-', '_' or '.'", key_id)
    try:
        seconds = parse_duration(raw.get("checkpoint_seconds", DEFAULT_CHECKPOINT_SECONDS))
    except ValueError:
        raise fail("checkpoint_seconds", "a duration such as 30, 30s or 5m", raw.get("checkpoint_seconds")) from None
    if seconds <= 0:
        raise fail("checkpoint_seconds", "a positive duration", raw.get("checkpoint_seconds"))
    sync = raw.get("sync", True)
    if not isinstance(sync, bool):
        raise fail("sync", "true or false", sync)
    if key and not path:
        raise ConfigError(f"{config_path}: audit.signing_key: set audit.path too (there is no log to sign)")
    return AuditConfig(
        path=resolve(path) if path and path != STDOUT else None,
        stdout=path == STDOUT,
        signing_key=resolve(key) if key else None,
        key_id=key_id,
        max_bytes=positive("max_bytes", DEFAULT_MAX_BYTES),
        checkpoint_every=positive("checkpoint_every", DEFAULT_CHECKPOINT_EVERY),
        checkpoint_seconds=seconds,
        queue_size=positive("queue_size", DEFAULT_QUEUE_SIZE),
        sync=sync,
    )
