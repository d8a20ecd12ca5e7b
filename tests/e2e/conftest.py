"""End-to-end fixtures: real Envoy, the real service and real upstream HTTP servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Gateway, start_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    try:
        yield gw
    finally:
        gw.client.close()
        gw.stack.stop()
