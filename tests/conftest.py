"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_config


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)
