"""The embedded engine: the bundle compiled by rego-cpp (``regopy``) and evaluated in process.

rego-cpp interpreters are not thread-safe, so each gRPC worker thread gets its own
interpreter compiled from the same bundle (compiling once per thread, not per call).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import regopy

from extauthz.decision import Decision, decision_from_result
from extauthz.errors import EngineError, PolicyError
from extauthz.policy.bundle import ENTRYPOINT, Bundle


class _Compiled:
    """One interpreter with the bundle built for the decision entry point."""

    def __init__(self, bundle: Bundle) -> None:
        self.interpreter = regopy.Interpreter()
        try:
            for path, module in sorted(bundle.modules.items()):
                self.interpreter.add_module(path, module)
            self.interpreter.add_data_json(json.dumps({"aegis": {"policy": bundle.data}}))
            self.compiled = self.interpreter.build(None, [ENTRYPOINT])
        except regopy.RegoError as exc:
            raise PolicyError(f"the Rego modules do not compile: {exc}") from exc
        if not self.compiled.ok():
            raise PolicyError(f"the Rego modules do not compile: {_first_line(str(self.compiled.node))}")

    def evaluate(self, document: str) -> Any:
        self.interpreter.set_input_term(document)
        output = self.interpreter.query_bundle_entrypoint(self.compiled, ENTRYPOINT)
        if not output.ok():
            raise EngineError(f"policy evaluation failed: {_first_line(str(output))}")
        results = json.loads(output.expressions().json())
        if not results:
            raise EngineError("policy evaluation produced no decision (data.aegis.decision is undefined)")
        return results[0]


class EmbeddedEngine:
    """regopy evaluation of a compiled bundle; one interpreter per thread."""

    def __init__(self, bundle: Bundle) -> None:
        self._bundle = bundle
        self._local = threading.local()
        self._local.compiled = _Compiled(bundle)  # compile now: a broken bundle fails at load

    @property
    def policy_version(self) -> str:
        return self._bundle.revision

    @property
    def headers_read(self) -> None:
        return None  # Rego may read any input, the clock included: never cached

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        compiled = getattr(self._local, "compiled", None)
        if compiled is None:
            compiled = self._local.compiled = _Compiled(self._bundle)
        try:
            document = json.dumps(policy_input, separators=(",", ":"), default=str)
            result = compiled.evaluate(document)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"policy evaluation failed ({exc.__class__.__name__})") from exc
        return decision_from_result(result, self._bundle.revision)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:300]
