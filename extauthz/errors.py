"""The one error hierarchy of Aegis.

Every error carries a stable ``code``: it is the log field, the metric label and the
``error`` key of the JSON body the agent receives.  The edge (``answer``) turns an error
into exactly one HTTP status; nothing below the edge knows about HTTP.

    AegisError
    ├── ConfigError              code=config_invalid        (startup; never on the request path)
    ├── PolicyError              code=policy_invalid        (YAML / bundle / Rego problems)
    ├── IdentityError            code=invalid_token    401  (missing, malformed, expired, bad signature…)
    ├── RequestError                                   400  (the agent's request cannot be judged)
    │   ├── MalformedBody        code=malformed_body   400
    │   ├── BodyTooLarge         code=body_too_large   413  (and too_many_keys, string_too_long…)
    │   └── HeadersTooLarge      code=headers_too_large 431 (and too_many_headers, too_many_params)
    ├── LimitExceeded            code=rate_limited / budget_exhausted 429 (Retry-After)
    ├── EngineError              code=engine_unavailable 503 (fail closed)
    ├── StoreError               code=store_unavailable  503 (fail closed)
    └── DecisionLogError         code=decision_log_unavailable 503 (fail closed: no call without its record)
"""

from __future__ import annotations


class AegisError(Exception):
    """Base of every error Aegis raises on purpose."""

    code: str = "internal_error"
    http_status: int = 503

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(AegisError):
    """``aegis.yaml`` is missing, malformed or inconsistent."""

    code = "config_invalid"


class PolicyError(AegisError):
    """A policy file, bundle or Rego module cannot be loaded."""

    code = "policy_invalid"


class IdentityError(AegisError):
    """The agent's token is missing or fails verification; ``reason`` is safe to show."""

    code = "invalid_token"
    http_status = 401

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RequestError(AegisError):
    """The request cannot be judged as sent."""

    code = "bad_request"
    http_status = 400


class MalformedBody(RequestError):
    """The body claims a format it does not have (or is ambiguous, e.g. duplicate JSON keys)."""

    code = "malformed_body"


class BodyTooLarge(RequestError):
    """The body exceeds the size Envoy forwards for the decision."""

    code = "body_too_large"
    http_status = 413


class HeadersTooLarge(RequestError):
    """The header block (or the query string in ``:path``) exceeds what Aegis judges."""

    code = "headers_too_large"
    http_status = 431


class LimitExceeded(AegisError):
    """A rate limit or budget refuses the call; ``retry_after_s`` says when it may succeed."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, code: str, message: str, *, limit_id: str, retry_after_s: float) -> None:
        super().__init__(message, code=code)
        self.limit_id = limit_id
        self.retry_after_s = retry_after_s


class EngineError(AegisError):
    """The policy engine failed; the call is denied (fail closed)."""

    code = "engine_unavailable"


class StoreError(AegisError):
    """The state store failed; the call is denied (fail closed)."""

    code = "store_unavailable"


class DecisionLogError(AegisError):
    """The decision log cannot be written; the call is refused (fail closed)."""

    code = "decision_log_unavailable"
