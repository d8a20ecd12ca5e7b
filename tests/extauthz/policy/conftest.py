"""Fixtures for the policy tests: real OPA servers (see opa_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import POLICIES
from opa_server import OpaServer

from extauthz.policy import build_bundle, write_bundle


@pytest.fixture(scope="session")
def opa_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[OpaServer]]:
    """Every OPA started in the session, stopped at its end."""
    servers: list[OpaServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def start_opa(opa_servers: list[OpaServer], tmp_path_factory: pytest.TempPathFactory):
    """``start_opa(*args)`` → a ready OpaServer run with those extra arguments."""

    def start(*args: str, ready: bool = True) -> OpaServer:
        server = OpaServer(*args, log=tmp_path_factory.mktemp("opa") / "opa.log")
        opa_servers.append(server)
        return server.wait_ready() if ready else server

    return start


@pytest.fixture(scope="session")
def support_bundle_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter policy as the bundle ``aegis policy build`` writes."""
    path = tmp_path_factory.mktemp("bundle") / "bundle.tar.gz"
    write_bundle(build_bundle(POLICIES), path)
    return path


@pytest.fixture(scope="session")
def opa_support(start_opa, support_bundle_file: Path) -> OpaServer:
    """OPA serving the starter policy bundle from a file (``--bundle``)."""
    return start_opa("--bundle", str(support_bundle_file))


@pytest.fixture(scope="session")
def opa_rest(start_opa) -> OpaServer:
    """A bare OPA; tests activate bundles in it with ``OpaServer.load``."""
    return start_opa()
