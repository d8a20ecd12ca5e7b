"""Bypass suite fixtures.

Each module shares one stack (real Envoy, the real service, the recording upstream test
servers): the ``gateway`` fixture of ``tests/e2e/conftest.py`` (module scope), or the
module's own when it needs other keys or approvals.  The upstream logs are cleared before
every case, so "nothing reached a tool" means nothing since this case began.
"""

from __future__ import annotations

import pytest

from bypass.wire import clear_upstreams


@pytest.fixture(autouse=True)
def _fresh_upstreams(request: pytest.FixtureRequest) -> None:
    for name in ("gateway", "gw"):
        if name in request.fixturenames:
            clear_upstreams(request.getfixturevalue(name))
