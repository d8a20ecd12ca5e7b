"""Target: the DLP library (``dlp.scan`` and ``dlp.redact``).

Promise, for any text and any body:

* ``scan`` returns findings sorted by start, not overlapping, inside the text
  (``0 <= start < end <= len(text)``), of requested types, with confidence in [0, 1];
  the only error it raises is ``UnknownDetector`` for a detector name it does not know;
* ``redact`` returns a ``Result`` or raises a ``DlpError`` — never another exception;
* a JSON body that is valid strict JSON stays valid JSON after redaction, and a second
  redaction of the output changes nothing (idempotent; except ``remove`` of positions);
* ``Result.counts`` agrees with ``Result.findings``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import dlp
from fuzz.targets import FuzzFailure

JSON_TYPES = ("application/json", "application/vnd.api+json", "text/json")


@dataclass(frozen=True)
class Case:
    text: str = ""
    detectors: tuple[str, ...] | None = None
    body: bytes = b""
    content_type: str = "application/json"
    fields: tuple[str, ...] = ()
    mode: str = "mask"
    on_binary: str = "pass"


def exercise(case: Case) -> None:
    _scan(case)
    _redact(case)


def _scan(case: Case) -> None:
    try:
        findings = dlp.scan(case.text, detectors=case.detectors)
    except dlp.UnknownDetector:
        known = {*dlp.DETECTORS, "*", "ALL"}
        if case.detectors is not None and all(d.strip().upper() in known for d in case.detectors):
            raise FuzzFailure("UnknownDetector for known detector names") from None
        return
    previous_end = 0
    for finding in findings:
        if not 0 <= finding.start < finding.end <= len(case.text):
            raise FuzzFailure(f"finding {finding} outside the text of length {len(case.text)}")
        if finding.start < previous_end:
            raise FuzzFailure("findings overlap or are not sorted by start")
        if not 0.0 <= finding.confidence <= 1.0 or finding.type not in dlp.DETECTORS:
            raise FuzzFailure(f"finding {finding} has a bad type or confidence")
        previous_end = finding.end


def _obligations(case: Case) -> dlp.Obligations | None:
    try:
        return dlp.Obligations(
            fields=case.fields,
            detectors=case.detectors or (),
            mode=case.mode,
            hash_key=b"h" * 32,
            on_binary=case.on_binary,
        )
    except dlp.InvalidObligations:
        return None


def _redact(case: Case) -> None:
    obligations = _obligations(case)
    if obligations is None:
        return
    try:
        result = dlp.redact(case.body, case.content_type, obligations)
    except dlp.DlpError:
        return
    if Counter(r.type for r in result.findings) != Counter(result.counts):
        raise FuzzFailure("Result.counts disagrees with Result.findings")
    if case.content_type.split(";")[0].strip() not in JSON_TYPES or _strict_json(case.body) is INVALID:
        return
    if result.changed and _strict_json(result.body) is INVALID:
        raise FuzzFailure("redacted JSON is no longer valid JSON")
    if case.mode == "remove":
        return  # removing ``$[0]`` twice removes two elements: "remove" is not idempotent by design
    again = dlp.redact(result.body, case.content_type, obligations)
    if again.changed:
        raise FuzzFailure("a second redaction changed the redacted JSON again")


INVALID = object()  # not strict JSON (``null`` is valid JSON, so None cannot say it)


def _strict_json(body: bytes) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    def no_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(body, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return INVALID
