"""Policy engines: evaluate the policy input against a bundle, return a ``Decision``.

Every engine loads the same OPA bundle and must give identical decisions (the conformance
suite proves it):

- ``native``: the YAML rule language compiled to Python closures (~15 µs); only for bundles
  whose Rego is exactly the Aegis library;
- ``regopy``: the bundle compiled by rego-cpp in process (~1.5 ms; any Rego);
- ``embedded`` (the default): ``native`` when the bundle allows it, else ``regopy``;
- ``opa``: an OPA sidecar serving the same bundle (``opa_url``), its revision checked on
  every decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from extauthz.decision import Decision
from extauthz.policy.bundle import Bundle


class PolicyEngine(Protocol):
    """Evaluates ``data.aegis.decision`` for one policy version."""

    @property
    def policy_version(self) -> str: ...

    @property
    def headers_read(self) -> frozenset[str] | None:
        """The request headers decisions depend on, when they depend on nothing else but
        the agent, the tool call and which calendars are open (not the clock, not I/O):
        then identical calls may share a decision (extauthz/decision_cache.py).  None when
        the engine may read anything (Rego)."""
        ...

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        """Decide; raise ``EngineError`` if the engine cannot."""
        ...


ENGINES = ("embedded", "native", "regopy", "opa")


def create_engine(
    bundle: Bundle,
    kind: str = "embedded",
    *,
    opa_url: str | None = None,
    opa_timeout_s: float | None = None,
) -> PolicyEngine:
    """The engine ``kind`` for a bundle; PolicyError if the bundle does not compile.

    ``opa_url`` / ``opa_timeout_s`` configure the ``opa`` engine (defaults: a sidecar on
    ``127.0.0.1:8181``, 500 ms).
    """
    from extauthz.engine.embedded import EmbeddedEngine
    from extauthz.engine.native import NativeEngine, supports

    if kind == "opa":
        from extauthz.engine.opa import DEFAULT_OPA_TIMEOUT_S, DEFAULT_OPA_URL, OpaEngine

        return OpaEngine(bundle, opa_url or DEFAULT_OPA_URL, opa_timeout_s or DEFAULT_OPA_TIMEOUT_S)
    if kind == "native" or (kind == "embedded" and supports(bundle)):
        return NativeEngine(bundle)
    if kind in {"embedded", "regopy"}:
        return EmbeddedEngine(bundle)
    raise ValueError(f"unknown engine {kind!r} (expected one of {', '.join(ENGINES)})")


__all__ = ["ENGINES", "PolicyEngine", "create_engine"]
