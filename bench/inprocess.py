"""The Aegis service assembled in process, for the engine benchmark and the Check profile.

``build_service`` on an ``aegis.yaml`` the harness writes (fresh dev keys, a generated policy
directory), decision log lines formatted as the service does (JSON) but written to a file,
and the requests an agent would send: an ``HttpRequest`` (what ``Authorizer.check`` takes)
and the equivalent Envoy ``CheckRequest`` (what the gRPC servicer takes).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

from bench.policygen import AGENT, TENANT, Call, scopes
from bench.stack import TOOL_HOST, write_aegis_config
from extauthz.config import AegisConfig
from extauthz.devtokens import mint_token
from extauthz.log_stream import BufferedLogHandler, JsonLogFormatter
from extauthz.server import MeasuredAuthorizationServicer, Service, build_service
from extauthz.tools import HttpRequest

TOKEN_TTL_S = 1800


@dataclass(frozen=True)
class InProcess:
    """A built service, its Check servicer and a valid agent token."""

    service: Service
    servicer: MeasuredAuthorizationServicer
    token: str
    config: AegisConfig

    def http_request(self, call: Call) -> HttpRequest:
        headers = {**call.headers, "authorization": f"Bearer {self.token}"}
        return HttpRequest("POST", call.host, call.path, "", headers, call.body_bytes())

    def check_request(self, call: Call) -> external_auth_pb2.CheckRequest:
        headers = {**call.headers, "authorization": f"Bearer {self.token}"}
        http = attribute_context_pb2.AttributeContext.HttpRequest(
            method="POST", host=call.host, path=call.path, headers=headers, raw_body=call.body_bytes()
        )
        request = attribute_context_pb2.AttributeContext.Request(http=http)
        return external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(request=request))


@contextmanager
def decision_log_to(path: Path) -> Iterator[None]:
    """The service's JSON log lines (one per decision, INFO) go to ``path`` meanwhile, through
    the handler ``aegis serve`` writes them with (buffered, flushed on a timer)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    handler = BufferedLogHandler(fd)
    handler.setFormatter(JsonLogFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        handler.close()
        os.close(fd)


@contextmanager
def in_process(
    workdir: Path,
    policy_dir: Path,
    *,
    freeze_heap: bool = False,
    decision_cache: bool = True,
    hosts: tuple[str, ...] = (TOOL_HOST,),
) -> Iterator[InProcess]:
    """The service on ``policy_dir`` (its own config, keys and SQLite store in ``workdir``);
    ``freeze_heap`` as ``aegis serve`` does it (undone on exit); ``decision_cache`` False
    decides every call afresh; ``hosts``: the tool hosts it routes."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_aegis_config(
        workdir, "127.0.0.1:9", policy_dir=policy_dir, decision_cache=decision_cache, hosts=hosts
    )
    with decision_log_to(workdir / "decisions.log"):
        service = build_service(config, freeze_heap=freeze_heap)
        try:
            if service.authorizer.policy is None:
                raise RuntimeError(f"the policy did not load: {service.reloader.status.last_error}")
            token = mint_token(config.identity, agent=AGENT, tenant=TENANT, scopes=scopes(), ttl_s=TOKEN_TTL_S)
            yield InProcess(service, MeasuredAuthorizationServicer(service), token, config)
        finally:
            service.close()
            if freeze_heap:
                gc.unfreeze()
