"""Typed readers for the fields of ``aegis.yaml``.

One place turns a raw YAML value into a checked Python value, or into a ``ConfigError`` that
names the file, the dotted key and what was expected; ``config.py`` and the packages that
own a section (``approvals/settings.py``, ``audit/settings.py``) all read through it, so
every section reports errors the same way. Keys are dotted (``identity.leeway``): the last
part is the field's name in its mapping. Imports nothing from Aegis but ``errors``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from extauthz.errors import ConfigError

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A gRPC listener on a Unix domain socket: Envoy on the same host, no TCP stack per message.
UNIX_PREFIX = "unix:"
# Linux's sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107


def parse_duration(value: object) -> float:
    """``30`` / ``"30s"`` / ``"5m"`` / ``"1h"`` → seconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m:
            return int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(value)


def parse_address(value: str, what: str = "address") -> tuple[str, int]:
    """``host:port`` → (host, port); ConfigError naming ``what`` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def socket_path(address: str) -> str | None:
    """The path of a ``unix:PATH`` address; None for ``host:port``."""
    return address[len(UNIX_PREFIX) :] if address.startswith(UNIX_PREFIX) else None


def resolve_path(base: Path, value: str) -> Path:
    """``value`` as an absolute path, relative ones taken from ``base``."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


class Fields:
    """Reads the fields of one config file; relative paths resolve against its directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: expected {expected}, got {value!r}")

    def mapping(self, value: Any, key: str, allowed: set[str] | None = None) -> dict[str, Any]:
        """``value`` as a mapping (None: empty); with ``allowed``, no other keys."""
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise self.fail(key, "a mapping", value)
        unknown = sorted(set(value) - allowed) if allowed is not None else []
        if unknown:
            names = ", ".join(sorted(allowed or ()))
            raise ConfigError(f"{self.path}: {key}: unknown key {unknown[0]!r} (allowed: {names})")
        return value

    def section(self, raw: Mapping[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        return self.mapping(raw.get(key), key, allowed)

    def string(self, s: Mapping[str, Any], key: str, default: str = "") -> str:
        value = s.get(_name(key), default)
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def boolean(self, s: Mapping[str, Any], key: str, default: bool) -> bool:
        value = s.get(_name(key), default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def positive_int(self, s: Mapping[str, Any], key: str, default: int) -> int:
        value = s.get(_name(key), default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(key, "a positive integer", value)
        return value

    def count(self, s: Mapping[str, Any], key: str, default: int) -> int:
        value = s.get(_name(key), default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(key, "a whole number, 0 or more", value)
        return value

    def duration(self, s: Mapping[str, Any], key: str, default: float) -> float:
        value = s.get(_name(key), default)
        try:
            return parse_duration(value)
        except ValueError:
            raise self.fail(key, "a duration such as 30, 30s, 5m or 1h", value) from None

    def url(self, s: Mapping[str, Any], key: str, default: str = "") -> str:
        """An http(s) URL, or empty."""
        value = self.string(s, key, default)
        if value and not value.startswith(("http://", "https://")):
            raise self.fail(key, "an http(s) URL", value)
        return value

    def env_name(self, s: Mapping[str, Any], key: str, default: str = "") -> str:
        """The name of an environment variable (never its value), or empty."""
        value = self.string(s, key, default)
        if value and not _ENV_NAME.match(value):
            raise self.fail(key, "the name of an environment variable", value)
        return value

    def address(self, s: Mapping[str, Any], key: str, default: str) -> str:
        value = self.string(s, key, default)
        parse_address(value, what=f"{self.path}: {key}")
        return value

    def grpc_address(self, s: Mapping[str, Any], key: str, default: str) -> str:
        """A gRPC listener: ``host:port``, or ``unix:PATH`` (relative to the config file;
        returned absolute, as Envoy and the service must both find it)."""
        value = self.string(s, key, default)
        path = socket_path(value)
        if path is None:
            parse_address(value, what=f"{self.path}: {key}")
            return value
        if not path:
            raise self.fail(key, "host:port or unix:PATH", value)
        resolved = str(resolve_path(self.base, path))
        if len(os.fsencode(resolved)) > MAX_SOCKET_PATH_BYTES:
            raise self.fail(key, f"a socket path of at most {MAX_SOCKET_PATH_BYTES} bytes once absolute", resolved)
        return UNIX_PREFIX + resolved

    def file(self, s: Mapping[str, Any], key: str) -> Path | None:
        """A path (relative to the config file), or None when unset."""
        value = self.string(s, key)
        return resolve_path(self.base, value) if value else None


def _name(key: str) -> str:
    return key.rsplit(".", 1)[-1]
