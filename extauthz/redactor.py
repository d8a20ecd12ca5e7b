"""Body redaction for one HTTP exchange, transport-neutral (ext_proc drives it).

ext_authz decides *what* must be redacted (the ``redact`` obligations in its dynamic
metadata); this module applies it to the request body before the upstream and the
response body before the agent.  It also applies the configured defaults (e.g. SECRET in
every response) to calls no rule sanitizes.

Outcomes are values (``BodyOutcome``), never exceptions, so the adapter can answer Envoy
precisely: a changed body, the same body, or a refusal with a status and a reason.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import dlp
from extauthz.limits.enforce import UsageCharge, decode_charges
from extauthz.metadata import (
    MAX_REQUEST_BODY_HANDED,
    MD_REDACT,
    MD_REQUEST_BODY,
    MD_REQUEST_REDACTED,
    MD_TOOL,
    MD_USAGE,
)

# A response Aegis cannot redact must not reach the agent: 502 with a reason.
REDACTION_FAILED_STATUS = 502

_log = logging.getLogger("aegis.redactor")


@dataclass(frozen=True)
class RedactionSettings:
    """Service-wide redaction settings (from ``aegis.yaml``)."""

    response_detectors: tuple[str, ...] = ()  # applied to every response, rule or not
    mode: str = "mask"
    hash_key: bytes | None = None
    max_body_bytes: int = 1024 * 1024
    on_binary: str = "pass"


@dataclass(frozen=True)
class BodyOutcome:
    """What to do with one body."""

    body: bytes | None = None  # new body; None = unchanged
    counts: Mapping[str, int] = field(default_factory=dict)
    refusal: tuple[int, str, str] | None = None  # (status, error code, message)
    # Over the size limit and passed on unredacted, because the policy allows it (over_limit: pass).
    passed_over_limit: bool = False


OBLIGATIONS_CACHE_ENTRIES = 256
# The ext_authz metadata keys an exchange reads (Exchange.from_metadata).
METADATA_READ = (MD_REDACT, MD_TOOL, MD_USAGE, MD_REQUEST_REDACTED, MD_REQUEST_BODY)

BODY_TOO_LARGE = (413, "body_too_large", "the body is larger than Aegis redacts")
MALFORMED_OBLIGATIONS = (REDACTION_FAILED_STATUS, "redaction_failed", "malformed redaction obligations")


@dataclass
class Exchange:
    """One request/response pair seen by ext_proc."""

    settings: RedactionSettings
    tool: str = "unknown"
    request_obligations: dlp.Obligations | None = None
    response_obligations: dlp.Obligations | None = None
    response_encoding: str = ""
    response_content_type: str = ""
    counts: Counter[str] = field(default_factory=Counter)
    trace_headers: Mapping[str, str] = field(default_factory=dict)  # traceparent/tracestate
    # Cost budgets priced by the response's token usage (ext_proc reads the body for them).
    usage: tuple[UsageCharge, ...] = ()
    # The rule obligations allow a body over max_body_bytes through unredacted (redact.over_limit:
    # pass in every redacting rule); the policy-level default redaction never does.
    over_limit_pass: bool = False
    passed_over_limit: list[str] = field(default_factory=list)  # phases that did: "request", "response"
    # Set when the obligations cannot be read: the exchange is refused at its first message.
    refusal: tuple[int, str, str] | None = None
    # Check redacted the request body already (metadata.MD_REQUEST_REDACTED): its outcome.
    request_redacted: BodyOutcome | None = None
    _pending_events: bytes = b""

    @classmethod
    def from_metadata(cls, settings: RedactionSettings, metadata: Mapping[str, object]) -> Exchange:
        """Build from the ext_authz dynamic metadata (None when ext_authz asked for nothing)."""
        raw = metadata.get(MD_REDACT)
        try:
            rule, response, over_limit_pass = read_obligations(raw if isinstance(raw, str) else "", settings)
            request_redacted = _redacted_by_check(metadata)
        except (ValueError, TypeError, dlp.DlpError):
            # Check wrote something this code cannot read: redact nothing wrongly, refuse (fail closed).
            return cls(settings, refusal=MALFORMED_OBLIGATIONS)
        tool = metadata.get(MD_TOOL)
        return cls(
            settings,
            tool=tool if isinstance(tool, str) and tool else "unknown",
            request_obligations=rule,
            response_obligations=response,
            usage=decode_charges(metadata.get(MD_USAGE)),
            over_limit_pass=over_limit_pass,
            request_redacted=request_redacted if rule is not None else None,
        )

    def take_request_redacted(self) -> BodyOutcome | None:
        """Check's redaction of the request body, counted into this exchange once (None when
        Check left the body to the request body message, or it was taken already)."""
        outcome, self.request_redacted = self.request_redacted, None
        if outcome is not None:
            self.counts.update(outcome.counts)
        return outcome

    @property
    def wants_request_body(self) -> bool:
        return self.request_obligations is not None

    @property
    def wants_response(self) -> bool:
        return self.response_obligations is not None or bool(self.usage)

    @property
    def reads_response_body(self) -> bool:
        """False for a usage-only exchange that streams (SSE usage is not read: never buffer a stream)."""
        return self.response_obligations is not None or (bool(self.usage) and not self._is_event_stream)

    @property
    def _is_event_stream(self) -> bool:
        return self.response_content_type.split(";", 1)[0].strip().lower() == "text/event-stream"

    def note_response_headers(self, headers: Mapping[str, str]) -> None:
        self.response_encoding = headers.get("content-encoding", "").strip().lower()
        self.response_content_type = headers.get("content-type", "")

    @property
    def streams_response(self) -> bool:
        """Server-sent events are redacted event by event as they stream, not buffered."""
        return self.response_obligations is not None and self._is_event_stream

    def redact_stream_chunk(self, chunk: bytes, end_of_stream: bool) -> BodyOutcome:
        """Redact the complete events in ``chunk`` (plus what an earlier chunk left open).

        An event that is not complete yet is held back, so PII split across chunks is seen
        whole; the held part is flushed at the end of the stream.
        """
        if self.response_obligations is None:
            return BodyOutcome()
        if self.response_encoding not in ("", "identity"):
            return BodyOutcome(
                refusal=(REDACTION_FAILED_STATUS, "redaction_failed", "cannot redact compressed streams")
            )
        data = self._pending_events + chunk
        cut = len(data) if end_of_stream else data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0
        ready, self._pending_events = data[:cut], data[cut:]
        passed = b""
        if len(self._pending_events) > self.settings.max_body_bytes:
            if not self.over_limit_pass:
                return BodyOutcome(refusal=(413, "body_too_large", "a streamed event is larger than Aegis redacts"))
            passed, self._pending_events = self._pending_events, b""  # the policy lets it through unredacted
            self._note_over_limit("response")
        lines = []
        counts: Counter[str] = Counter()
        for line in ready.split(b"\n"):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                media = "application/json" if payload[:1] in (b"{", b"[") else "text/plain"
                try:
                    result = dlp.redact(payload, media, self.response_obligations)
                except dlp.DlpError:
                    try:
                        result = dlp.redact(payload, "text/plain", self.response_obligations)
                    except dlp.DlpError as exc:  # e.g. a binary event with on_binary: block
                        reason = f"cannot redact a streamed event: {exc}"
                        return BodyOutcome(refusal=(REDACTION_FAILED_STATUS, "redaction_failed", reason))
                counts.update(result.counts)
                line = b"data: " + result.body
            lines.append(line)
        self.counts.update(counts)
        return BodyOutcome(body=b"\n".join(lines) + passed, counts=counts, passed_over_limit=bool(passed))

    def redact_request(self, body: bytes, content_type: str) -> BodyOutcome:
        if self.request_obligations is None:
            return BodyOutcome()
        if len(body) > self.settings.max_body_bytes:
            return self._over_limit("request")
        return self._redact(body, content_type, "", self.request_obligations)

    def redact_response(self, body: bytes) -> BodyOutcome:
        if self.response_obligations is None:
            return BodyOutcome()
        if len(body) > self.settings.max_body_bytes:
            return self._over_limit("response")
        return self._redact(body, self.response_content_type, self.response_encoding, self.response_obligations)

    def _over_limit(self, phase: str) -> BodyOutcome:
        """A body over max_body_bytes: 413, or unchanged when the policy says ``over_limit: pass``."""
        if not self.over_limit_pass:
            return BodyOutcome(refusal=BODY_TOO_LARGE)
        self._note_over_limit(phase)
        return BodyOutcome(passed_over_limit=True)

    def _note_over_limit(self, phase: str) -> None:
        if phase not in self.passed_over_limit:
            self.passed_over_limit.append(phase)
        _log.warning(
            "dlp: %s body over max_body_bytes passed unredacted (policy over_limit: pass), tool %s", phase, self.tool
        )

    def _redact(self, body: bytes, content_type: str, encoding: str, obligations: dlp.Obligations) -> BodyOutcome:
        try:
            plain = _decode(body, encoding)
        except (OSError, EOFError, zlib.error, ValueError):
            return BodyOutcome(refusal=(REDACTION_FAILED_STATUS, "redaction_failed", "the body's encoding is corrupt"))
        if plain is None:
            return BodyOutcome(
                refusal=(REDACTION_FAILED_STATUS, "redaction_failed", f"cannot redact {encoding} bodies")
            )
        try:
            result = dlp.redact(plain, content_type, obligations)
        except dlp.DlpError as exc:
            return BodyOutcome(refusal=(REDACTION_FAILED_STATUS, "redaction_failed", f"cannot redact the body: {exc}"))
        self.counts.update(result.counts)
        if not result.changed:
            return BodyOutcome(counts=result.counts)
        return BodyOutcome(body=_encode(result.body, encoding), counts=result.counts)


def redact_request_in_check(
    settings: RedactionSettings, metadata: Mapping[str, str], body: bytes, content_type: str
) -> dict[str, str]:
    """The metadata that hands ext_proc a request body Check redacted (``MD_REQUEST_REDACTED``,
    and ``MD_REQUEST_BODY`` when it changed), or nothing when the request body message must
    do it: no rule obligations, a body over the limits, a refusal (413 or 502 with its reason
    comes from ext_proc, as before), or a redacted body that is not UTF-8."""
    exchange = Exchange.from_metadata(settings, metadata)
    if exchange.refusal is not None or exchange.request_obligations is None or not body:
        return {}
    if len(body) > min(settings.max_body_bytes, MAX_REQUEST_BODY_HANDED):
        return {}
    outcome = exchange.redact_request(body, content_type)
    if outcome.refusal is not None or outcome.passed_over_limit:
        return {}
    handed = {MD_REQUEST_REDACTED: counts_text(outcome.counts)}
    if outcome.body is not None:
        if len(outcome.body) > MAX_REQUEST_BODY_HANDED:
            return {}
        try:
            handed[MD_REQUEST_BODY] = outcome.body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
    return handed


def counts_text(counts: Mapping[str, int]) -> str:
    """Redaction counts as text, ``EMAIL:2,SSN:1``: types and numbers, never values."""
    return ",".join(f"{kind}:{count}" for kind, count in sorted(counts.items()))


def _redacted_by_check(metadata: Mapping[str, object]) -> BodyOutcome | None:
    """Check's request redaction from its metadata; ValueError on text it cannot read."""
    counts_raw = metadata.get(MD_REQUEST_REDACTED)
    if counts_raw is None:
        return None
    if not isinstance(counts_raw, str):
        raise ValueError("request_redacted must be text")
    counts: dict[str, int] = {}
    for item in filter(None, counts_raw.split(",")):
        kind, _, number = item.partition(":")
        counts[kind] = int(number)
    body = metadata.get(MD_REQUEST_BODY)
    return BodyOutcome(body=body.encode("utf-8") if isinstance(body, str) else None, counts=counts)


# A policy version has a handful of distinct obligations, and every redacted call of one
# rule carries the same text; reading it is pure (the Obligations are frozen), so the result
# is kept.  Malformed text raises every time (exceptions are not cached).
@functools.lru_cache(maxsize=OBLIGATIONS_CACHE_ENTRIES)
def read_obligations(
    raw: str, settings: RedactionSettings
) -> tuple[dlp.Obligations | None, dlp.Obligations | None, bool]:
    """Check's ``redact`` metadata (JSON, "" for none) → (request obligations, response
    obligations with the settings' default detectors, whether over-limit bodies pass).
    Raises ValueError, TypeError or ``dlp.DlpError`` on text it cannot read."""
    data = json.loads(raw) if raw else None
    rule = _rule_obligations(data, settings)
    default = None
    if settings.response_detectors:
        default = dlp.Obligations(detectors=settings.response_detectors, mode=settings.mode, hash_key=settings.hash_key)
    over_limit_pass = rule is not None and isinstance(data, dict) and data.get("over_limit") == "pass"
    return rule, _merge(rule, default), over_limit_pass


def _rule_obligations(data: object, settings: RedactionSettings) -> dlp.Obligations | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TypeError("redaction obligations must be a JSON object")
    return dlp.Obligations(
        fields=_names(data.get("fields", [])),
        detectors=_names(data.get("detectors", [])),
        mode=settings.mode,
        hash_key=settings.hash_key,
        on_binary=settings.on_binary,
    )


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("redaction fields and detectors must be lists of strings")
    return tuple(value)


def _merge(a: dlp.Obligations | None, b: dlp.Obligations | None) -> dlp.Obligations | None:
    if a is None or b is None:
        return a or b
    detectors = tuple(sorted(set(a.detectors) | set(b.detectors)))
    return dlp.Obligations(
        fields=a.fields, detectors=detectors, mode=a.mode, hash_key=a.hash_key, on_binary=a.on_binary
    )


def _decode(body: bytes, encoding: str) -> bytes | None:
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return None  # br, zstd…: not redactable here, so refused (never passed unredacted)


def _encode(body: bytes, encoding: str) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body, mtime=0)
    if encoding == "deflate":
        return zlib.compress(body)
    return body
