"""Both store backends behind one fixture: the contract suite runs against each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer

from extauthz.store import Store
from extauthz.store.redis import RedisStore
from extauthz.store.sqlite import SqliteStore


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "aegis.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        s = RedisStore(server.url, timeout_s=1.0)
    try:
        yield s
    finally:
        s.close()
