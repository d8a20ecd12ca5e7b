"""The ext_authz adapter: ``CheckRequest`` ↔ domain types.  The only code that imports the
Envoy authorization protobufs; the decision logic lives in ``authorizer``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from extauthz.answer import Answer, decision_id_header
from extauthz.authorizer import Authorizer
from extauthz.metadata import (
    HEADER_DECISION_ID,
    HEADER_OVERRIDE,
    MD_BODY_PHASES,
    MD_REDACT,
    MD_USAGE,
    PHASES_BOTH_BODIES,
    PHASES_RESPONSE,
)
from extauthz.tools import HttpRequest

# The agent's credentials stop at the gateway: the upstream tool never sees them.
STRIPPED_UPSTREAM_HEADERS = ("authorization", HEADER_OVERRIDE)
_OVERWRITE = base_pb2.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD


def request_from_check(check: external_auth_pb2.CheckRequest) -> HttpRequest:
    """The agent's HTTP request as Envoy describes it (path already normalised by Envoy)."""
    http = check.attributes.request.http
    path, _, query = http.path.partition("?")
    body = http.raw_body or http.body.encode()
    headers = dict(http.headers)
    # Envoy marks a body it cut at max_request_bytes (allow_partial_message) with this header.
    truncated = headers.get("x-envoy-auth-partial-body") == "true"
    return HttpRequest(
        method=http.method,
        host=http.host,
        path=path,
        query=query,
        headers=headers,
        body=body,
        body_truncated=truncated,
    )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def _struct(values: Mapping[str, str]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    fields = struct.fields  # set in place: half the cost of Struct.update's type dispatch
    for key, value in values.items():
        fields[key].string_value = value
    return struct


def body_phases(answer: Answer, request: HttpRequest, *, always_process_bodies: bool = False) -> str | None:
    """Which ext_proc instance handles this call's bodies (``metadata.BODY_PHASES``), or None
    when ext_proc has nothing to do: no redaction obligations and no usage to meter."""
    metadata = answer.metadata
    redacts = MD_REDACT in metadata
    if not (answer.allowed and (redacts or MD_USAGE in metadata or always_process_bodies)):
        return None
    # Rule obligations apply to both bodies; default detectors and usage read the response only,
    # and so does a call without a request body (Check saw the whole body: Envoy sends no more).
    return PHASES_BOTH_BODIES if redacts and request.body else PHASES_RESPONSE


def response_from_answer(answer: Answer, phases: str | None = None) -> external_auth_pb2.CheckResponse:
    """An Answer as a CheckResponse: OK with upstream headers, or a denied local reply.

    ``phases`` (``body_phases``) goes into the dynamic metadata, where Envoy's matchers pick
    the ext_proc instance; without it every ext_proc filter is skipped.
    """
    decision_id = decision_id_header(answer)
    metadata = _struct(answer.metadata)
    if phases is not None:
        metadata.fields[MD_BODY_PHASES].string_value = phases
    if answer.allowed:
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_header(*decision_id)],
                headers_to_remove=STRIPPED_UPSTREAM_HEADERS,
                response_headers_to_add=[_header(*decision_id)],
            ),
            dynamic_metadata=metadata,
        )
    headers = [_header("content-type", "application/json"), _header(*decision_id)]
    headers.extend(_header(k, v) for k, v in answer.response_headers)
    # A non-OK status makes Envoy send the denied response; its HTTP status may be any code (202 too).
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=answer.status),
            headers=headers,
            body=json.dumps(answer.body or {}, separators=(",", ":")),
        ),
        dynamic_metadata=metadata,
    )


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """``envoy.service.auth.v3.Authorization/Check`` on top of an Authorizer."""

    def __init__(self, authorizer: Authorizer, *, always_process_bodies: bool = False) -> None:
        self._authorizer = authorizer
        self._always_process_bodies = always_process_bodies

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        http_request = request_from_check(request)
        answer = self._authorizer.check(http_request)
        return response_from_answer(answer, self.phases(answer, http_request))

    def phases(self, answer: Answer, request: HttpRequest) -> str | None:
        return body_phases(answer, request, always_process_bodies=self._always_process_bodies)


__all__ = ["HEADER_DECISION_ID", "AuthorizationServicer", "request_from_check", "response_from_answer"]
