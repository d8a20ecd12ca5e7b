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

This module imports nothing from the rest of Aegis but ``errors`` and ``config_fields``
(config.py imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.config_fields import Fields
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


def parse_audit(raw: Any, f: Fields) -> AuditConfig:
    """Validate the raw ``audit`` mapping; ConfigError names the key and the bad value."""
    if raw is None:
        return AuditConfig()
    s = f.mapping(raw, "audit", _KEYS)
    path, key_id = f.string(s, "audit.path"), f.string(s, "audit.key_id")
    if key_id and not key_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise f.fail("audit.key_id", "letters, digits, '-', '_' or '.'", key_id)
    seconds = f.duration(s, "audit.checkpoint_seconds", DEFAULT_CHECKPOINT_SECONDS)
    if seconds <= 0:
        raise f.fail("audit.checkpoint_seconds", "a positive duration", s.get("checkpoint_seconds"))
    signing_key = f.file(s, "audit.signing_key")
    if signing_key and not path:
        raise ConfigError(f"{f.path}: audit.signing_key: set audit.path too (there is no log to sign)")
    return AuditConfig(
        path=f.file(s, "audit.path") if path != STDOUT else None,
        stdout=path == STDOUT,
        signing_key=signing_key,
        key_id=key_id,
        max_bytes=f.positive_int(s, "audit.max_bytes", DEFAULT_MAX_BYTES),
        checkpoint_every=f.positive_int(s, "audit.checkpoint_every", DEFAULT_CHECKPOINT_EVERY),
        checkpoint_seconds=seconds,
        queue_size=f.positive_int(s, "audit.queue_size", DEFAULT_QUEUE_SIZE),
        sync=f.boolean(s, "audit.sync", True),
    )
