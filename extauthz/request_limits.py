"""Size limits on what an agent's request may hold, each refused with its own 4xx.

Envoy already bounds the raw request (``max_request_headers_kb``, ``max_headers_count``,
``max_request_bytes``); these limits bound what Aegis *builds* from it — the policy input,
the approval fingerprint, the decision record — so no request of a legal size can make a
decision expensive or crash it.  They also hold when Check is called by something other
than the generated Envoy config.

    limit                     value      refused with
    MAX_REQUEST_HEADERS       128        431 too_many_headers
    MAX_REQUEST_HEADER_BYTES  64 KiB     431 headers_too_large
    MAX_QUERY_PARAMS          256        431 too_many_params   (the query is part of :path)
    MAX_JSON_DEPTH            32         400 malformed_body    (tools.MAX_JSON_DEPTH)
    MAX_ARGUMENT_KEYS         1024       413 too_many_keys     (JSON object keys in total, form fields)
    MAX_ARRAY_ITEMS           10000      413 too_many_items    (JSON array elements in total)
    MAX_KEY_CHARS             256        413 key_too_long
    MAX_STRING_CHARS          131072     413 string_too_long   (one JSON string or form value)
    lone UTF-16 surrogates    none       400 malformed_body    (not Unicode; parsers disagree)

The header limits sit above Envoy's defaults (100 headers, 60 KiB) so that a request Envoy
accepted, plus the pseudo-headers and the few headers Envoy adds, is never refused here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extauthz.errors import BodyTooLarge, HeadersTooLarge, MalformedBody

MAX_REQUEST_HEADERS = 128
MAX_REQUEST_HEADER_BYTES = 64 * 1024
MAX_QUERY_PARAMS = 256
MAX_ARGUMENT_KEYS = 1024
MAX_ARRAY_ITEMS = 10_000
MAX_KEY_CHARS = 256
# Large text arguments (a message, a document) stay possible; a single value of most of the
# body (copied into approval summaries, reasons, decision records) does not.
MAX_STRING_CHARS = 128 * 1024


def check_headers(headers: Mapping[str, str]) -> None:
    """431 for a header map over the count or size limit (names and values, in bytes)."""
    if len(headers) > MAX_REQUEST_HEADERS:
        raise HeadersTooLarge(f"the request has more than {MAX_REQUEST_HEADERS} headers", code="too_many_headers")
    chars = sum(map(len, headers)) + sum(map(len, headers.values()))
    # UTF-8 takes at most 4 bytes a character, so bytes are counted (every value encoded, on
    # every Check) only when the characters alone could be over the limit.
    if chars * 4 > MAX_REQUEST_HEADER_BYTES and _encoded_size(headers) > MAX_REQUEST_HEADER_BYTES:
        raise HeadersTooLarge(f"the request headers exceed {MAX_REQUEST_HEADER_BYTES} bytes", code="headers_too_large")


def _encoded_size(headers: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())


def too_many_params() -> HeadersTooLarge:
    return HeadersTooLarge(f"the query string has more than {MAX_QUERY_PARAMS} parameters", code="too_many_params")


def too_many_fields() -> BodyTooLarge:
    return BodyTooLarge(f"the form body has more than {MAX_ARGUMENT_KEYS} fields", code="too_many_keys")


@dataclass
class _Tally:
    keys: int = 0
    items: int = 0


def check_arguments(document: Any) -> None:
    """Key, item, key-length and string-length limits over a parsed body (any nesting)."""
    _walk(document, _Tally())


def check_string(value: str) -> None:
    """One string argument (JSON string, form or query value): length and valid Unicode."""
    if len(value) > MAX_STRING_CHARS:
        raise BodyTooLarge(f"an argument string is longer than {MAX_STRING_CHARS} characters", code="string_too_long")
    if not value.isascii() and not _is_unicode(value):
        # "\ud800" decodes to a lone surrogate: not a character; upstream parsers replace it,
        # reject it or keep it, and it cannot be encoded for the decision log or a fingerprint.
        raise MalformedBody("the body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not Unicode")


def _is_unicode(value: str) -> bool:
    """No lone surrogates (UTF-8 can encode every other code point)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(value: Any, tally: _Tally) -> None:
    if isinstance(value, str):
        check_string(value)
    elif isinstance(value, dict):
        tally.keys += len(value)
        if tally.keys > MAX_ARGUMENT_KEYS:
            raise BodyTooLarge(f"the body has more than {MAX_ARGUMENT_KEYS} keys", code="too_many_keys")
        for key, item in value.items():
            if len(key) > MAX_KEY_CHARS:
                raise BodyTooLarge(f"a key is longer than {MAX_KEY_CHARS} characters", code="key_too_long")
            check_string(key)
            _walk(item, tally)
    elif isinstance(value, list):
        tally.items += len(value)
        if tally.items > MAX_ARRAY_ITEMS:
            raise BodyTooLarge(f"the body has more than {MAX_ARRAY_ITEMS} array items", code="too_many_items")
        for item in value:
            _walk(item, tally)
