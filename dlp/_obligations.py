"""Redaction obligations: what to redact and how, as ext_authz hands them to ext_proc.

ext_authz writes ``Obligations.to_dict()`` as JSON under the ``redact`` dynamic-metadata key
(``extauthz.metadata.MD_REDACT``); ext_proc reads it back with ``Obligations.from_dict``.  The
HMAC key for ``hash`` mode never travels in metadata: the caller passes it from its own config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlp._errors import InvalidObligations
from dlp._paths import compile_field
from dlp._scan import resolve_detectors, resolve_thresholds

MODES: tuple[str, ...] = ("mask", "partial", "hash", "remove")
ON_BINARY: tuple[str, ...] = ("pass", "block")
DEFAULT_MODE = "mask"
DEFAULT_ON_BINARY = "pass"
MIN_HASH_KEY_BYTES = 16

_DICT_KEYS = frozenset({"fields", "detectors", "mode", "on_binary", "thresholds"})


@dataclass(frozen=True)
class Obligations:
    """What :func:`dlp.redact` must redact and how.

    ``fields``: field names (any depth, case-insensitive: ``ssn``) or JSON paths (``$.customer.address``,
    ``$.items[*].email``, ``$..dob``) whose whole value is redacted.  ``detectors``: detector type
    names run over every string value (empty: none; ``"*"`` or ``"ALL"``: all).  ``mode``: ``mask``,
    ``partial``, ``hash`` (needs ``hash_key``) or ``remove``.  ``on_binary``: what to do with a body
    that is not text: ``pass`` it through untouched or ``block`` (raise :class:`dlp.BinaryBody`).
    ``thresholds``: per-detector minimum confidence overrides, as ``(name, value)`` pairs.
    """

    fields: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ()
    mode: str = DEFAULT_MODE
    hash_key: bytes | None = field(default=None, repr=False)
    on_binary: str = DEFAULT_ON_BINARY
    thresholds: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidObligations(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.on_binary not in ON_BINARY:
            raise InvalidObligations(f"on_binary must be one of {', '.join(ON_BINARY)}, got {self.on_binary!r}")
        if self.mode == "hash" and (self.hash_key is None or len(self.hash_key) < MIN_HASH_KEY_BYTES):
            raise InvalidObligations(f"mode 'hash' needs a hash_key of at least {MIN_HASH_KEY_BYTES} bytes")
        if not isinstance(self.fields, tuple) or not isinstance(self.detectors, tuple):
            raise InvalidObligations("fields and detectors must be tuples of strings")
        for name in self.fields:
            compile_field(name)  # raises InvalidObligations naming the bad path
        resolve_detectors(self.detectors)
        resolve_thresholds(dict(self.thresholds))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, hash_key: bytes | None = None) -> Obligations:
        """Build obligations from their JSON form: ``{"fields": [...], "detectors": [...], "mode": "mask"}``.

        ``fields`` and ``detectors`` may also be comma-separated strings.  Unknown keys are refused
        so that a typo in a policy does not silently redact less.
        """
        if not isinstance(data, Mapping):
            raise InvalidObligations(f"obligations must be an object, got {type(data).__name__}")
        unknown = set(data) - _DICT_KEYS
        if unknown:
            raise InvalidObligations(f"unknown obligation keys: {', '.join(sorted(unknown))}")
        thresholds = data.get("thresholds") or {}
        if not isinstance(thresholds, Mapping):
            raise InvalidObligations("thresholds must be an object of detector name to number")
        return cls(
            fields=_names(data.get("fields"), "fields"),
            detectors=_names(data.get("detectors"), "detectors"),
            mode=str(data.get("mode", DEFAULT_MODE)),
            hash_key=hash_key,
            on_binary=str(data.get("on_binary", DEFAULT_ON_BINARY)),
            thresholds=tuple(sorted((str(k), _number(v, k)) for k, v in thresholds.items())),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form read by :meth:`from_dict`; never includes ``hash_key``."""
        out: dict[str, Any] = {
            "fields": list(self.fields),
            "detectors": list(self.detectors),
            "mode": self.mode,
            "on_binary": self.on_binary,
        }
        if self.thresholds:
            out["thresholds"] = dict(self.thresholds)
        return out


def _names(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidObligations(f"{key} must be a list of strings or a comma-separated string")


def _number(value: object, key: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidObligations(f"threshold for {key!r} must be a number, got {value!r}")
    return float(value)
