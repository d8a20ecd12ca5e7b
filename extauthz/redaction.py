"""Redaction of what Aegis itself records or echoes (approval summaries, reason texts).

Agents' arguments can hold PII; anything Aegis stores or shows about a call goes through
the ``dlp`` detectors first, so approvers, logs and error bodies never see raw values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dlp

_ALL = dlp.Obligations(detectors=("*",), mode="mask")


def summarize_args(args: Mapping[str, Any]) -> str:
    """The call's arguments as JSON with every detected PII value masked."""
    raw = json.dumps(dict(args), sort_keys=True, ensure_ascii=False, default=str).encode()
    return dlp.redact(raw, "application/json", _ALL).body.decode()


def safe_text(value: str) -> str:
    """A string with detected PII masked (for reason templates quoting argument values)."""
    return dlp.redact(value.encode(), "text/plain", _ALL).body.decode()
