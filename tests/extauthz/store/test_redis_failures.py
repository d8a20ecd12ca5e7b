"""The Redis backend's boundary: errors become StoreError fast, back-off, then reconnect."""

from __future__ import annotations

import time

import pytest
from helpers import free_port
from redis_server import RedisServer

from extauthz.errors import StoreError
from extauthz.store.redis import RedisStore


def test_unreachable_redis_fails_fast_then_backs_off():
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.consume("apr_1", 0.0)
    assert info.value.code == "store_unavailable" and "ConnectionError" in info.value.message
    with pytest.raises(StoreError, match="retrying in"):  # inside the back-off: no attempt at all
        store.take_token("k", 1, 1, 0.0)
    assert time.monotonic() - started < 0.5
    store.close()


def test_reconnects_after_a_restart():
    server = RedisServer().start()
    store = RedisStore(server.url, timeout_s=0.2)
    try:
        assert store.consume_budget("b", 1, 5, time.time() + 60, time.time()) == (True, 1)
        server.stop()
        with pytest.raises(StoreError):
            store.ping()
        server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                store.ping()
                break
            except StoreError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert store.consume_budget("b", 1, 5, time.time() + 60, time.time()) == (True, 1)  # no persistence
    finally:
        store.close()
        server.stop()


def test_a_bad_url_is_a_store_error():
    with pytest.raises(StoreError):
        RedisStore("redis://host:notaport/0")
