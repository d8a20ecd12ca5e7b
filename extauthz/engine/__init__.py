"""Policy engines: evaluate the policy input against a bundle, return a ``Decision``.

``embedded`` (regopy, in process, the default) and — with the policy-as-code work — ``opa``
(an OPA sidecar over HTTP) load the same bundle and must give identical decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from extauthz.decision import Decision


class PolicyEngine(Protocol):
    """Evaluates ``data.aegis.decision`` for one policy version."""

    @property
    def policy_version(self) -> str: ...

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        """Decide; raise ``EngineError`` if the engine cannot."""
        ...


__all__ = ["PolicyEngine"]
