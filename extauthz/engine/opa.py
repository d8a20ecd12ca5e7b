"""The OPA sidecar engine: ``POST {url}/v1/data/aegis/decision`` on an OPA serving our bundle.

The sidecar loads the same bundle Aegis loaded (``opa run --server --bundle bundle.tar.gz``
or OPA's bundle service).  Every query asks for provenance (``?provenance=true``) and the
decision is accepted only if OPA reports a bundle with our revision: a sidecar serving
another policy version — an older bundle, a newer one Aegis has not loaded yet, or none
at all — makes every decision fail closed.  The check rides on the decision response
itself, so it costs no extra round trip and cannot race a bundle swap.

Every httpx and OPA failure is translated to ``EngineError`` in one place (``_query``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from extauthz.decision import Decision, decision_from_result
from extauthz.errors import EngineError
from extauthz.policy.bundle import ENTRYPOINT, Bundle

DEFAULT_OPA_URL = "http://127.0.0.1:8181"
# A decision is on the request path: a sidecar slower than this is treated as down.
DEFAULT_OPA_TIMEOUT_S = 0.5
_CONNECT_TIMEOUT_S = 0.25
_MAX_CONNECTIONS = 64


def reported_revisions(body: Mapping[str, Any]) -> set[str]:
    """The bundle revisions OPA reports in a decision's ``provenance.bundles``."""
    provenance = body.get("provenance")
    bundles = provenance.get("bundles") if isinstance(provenance, dict) else None
    if not isinstance(bundles, dict):
        return set()
    return {str(b["revision"]) for b in bundles.values() if isinstance(b, dict) and "revision" in b}


class OpaEngine:
    """Decisions from an OPA sidecar, checked against the policy version Aegis loaded."""

    def __init__(
        self,
        bundle: Bundle,
        url: str = DEFAULT_OPA_URL,
        timeout_s: float = DEFAULT_OPA_TIMEOUT_S,
        *,
        client: httpx.Client | None = None,
    ) -> None:
        self._bundle = bundle
        self._url = url.rstrip("/")
        self._endpoint = f"{self._url}/v1/data/{ENTRYPOINT}"
        # One client for the engine's lifetime: keep-alive connections to the sidecar.
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, _CONNECT_TIMEOUT_S)),
            limits=httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS),
            headers={"content-type": "application/json"},
        )

    @property
    def policy_version(self) -> str:
        return self._bundle.revision

    @property
    def headers_read(self) -> None:
        return None  # Rego may read any input, the clock included: never cached

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    @property
    def url(self) -> str:
        return self._url

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        body = self._query(policy_input)
        revisions = reported_revisions(body)
        if self._bundle.revision not in revisions:
            serving = ", ".join(sorted(revisions)) or "no bundle"
            raise EngineError(
                f"OPA at {self._url} serves policy version {serving}, not {self._bundle.revision}: "
                "refusing its decision"
            )
        if "result" not in body:
            raise EngineError("policy evaluation produced no decision (data.aegis.decision is undefined in OPA)")
        return decision_from_result(body["result"], self._bundle.revision)

    def close(self) -> None:
        """Close the sidecar connections."""
        self._client.close()

    def __enter__(self) -> OpaEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _query(self, policy_input: Mapping[str, Any]) -> dict[str, Any]:
        """One decision request; every failure becomes an EngineError (the one translation point)."""
        try:
            payload = json.dumps({"input": policy_input}, separators=(",", ":"), default=str, allow_nan=False)
            response = self._client.post(self._endpoint, params={"provenance": "true"}, content=payload)
        except httpx.TimeoutException as exc:
            raise EngineError(f"OPA at {self._url} did not answer in time ({exc.__class__.__name__})") from exc
        except httpx.HTTPError as exc:
            raise EngineError(f"OPA at {self._url} is unreachable ({exc.__class__.__name__})") from exc
        except (TypeError, ValueError) as exc:
            raise EngineError(f"the policy input cannot be sent to OPA ({exc.__class__.__name__})") from exc
        if response.status_code != httpx.codes.OK:
            raise EngineError(f"OPA at {self._url} answered {response.status_code}: {_opa_message(response)}")
        try:
            body = response.json()
        except ValueError as exc:
            raise EngineError(f"OPA at {self._url} answered with invalid JSON") from exc
        if not isinstance(body, dict):
            raise EngineError(f"OPA at {self._url} answered with a non-object")
        return body


def _opa_message(response: httpx.Response) -> str:
    """OPA's error ``code: message``, shortened (never the whole body)."""
    try:
        error = response.json()
        text = f"{error.get('code', '')}: {error.get('message', '')}"
    except (ValueError, AttributeError):
        text = response.text
    return text[:300]
