"""``redact``: pick the body format from the content type, decode, redact, encode.

The decision chain, in order:

1. Binary by declaration (images, octet-stream, archives, protobuf/gRPC…), or bytes that do not
   decode in the declared charset (UTF-8 by default; always UTF-8 for JSON, RFC 8259; UTF-8 for
   a charset no decoder knows), or text with NUL bytes → not redacted:
   passed through untouched (``on_binary="pass"``, ``Result.binary``) or refused (``"block"``).
2. JSON (``application/json``, ``*+json``) → parsed strictly (duplicate keys and syntax errors
   raise :class:`dlp.MalformedBody`) and redacted structure-preserving.
3. NDJSON / JSON Lines → the same per line; blank lines kept.
4. Form (``application/x-www-form-urlencoded``) → per field; untouched pairs keep their bytes.
5. Anything else that decodes → scanned as text.

A body is re-encoded only when something changed; otherwise ``Result.body`` is the input object.
"""

from __future__ import annotations

import codecs
from collections import Counter
from urllib.parse import quote_plus, unquote_plus

from dlp import _json
from dlp._context import key_hint
from dlp._errors import BinaryBody, InvalidJson
from dlp._modes import OWN_TOKEN, replacement
from dlp._obligations import Obligations
from dlp._plan import Plan, plan_for
from dlp._scan import scan_segments
from dlp._types import FIELD, Redaction, Result

_BINARY_PREFIXES = ("image/", "audio/", "video/", "font/")
_BINARY_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-protobuf",
        "application/protobuf",
        "application/grpc",
        "application/grpc+proto",
        "application/vnd.google.protobuf",
        "application/msgpack",
        "application/x-msgpack",
        "application/cbor",
        "multipart/form-data",
    }
)
_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/json-lines",
    }
)
_FORM_TYPE = "application/x-www-form-urlencoded"


def _media_type(content_type: str) -> tuple[str, str]:
    """(``type/subtype`` lower-cased, charset or ``utf-8``)."""
    media, _, params = content_type.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    return media.strip().lower(), charset


def _effective_charset(media: str, declared: str) -> str:
    """The charset the body's readers will use.  RFC 8259: JSON is UTF-8 and its media type
    defines no charset, so JSON clients ignore a declared one; a label no decoder knows
    (``nope``, ``base64``) makes clients fall back to UTF-8.  Either way DLP reads UTF-8 too,
    rather than pass the body on as unscanned "binary"."""
    if _is_json(media) or media in _NDJSON_TYPES:
        return "utf-8"
    try:
        codecs.lookup(declared)
    except LookupError:
        return "utf-8"
    return declared


def _decode(body: bytes, charset: str) -> str | None:
    try:
        text = body.decode(charset)
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def redact(body: bytes, content_type: str, obligations: Obligations) -> Result:
    """Redact ``body`` per ``obligations``; see the module docstring for the format rules.

    Raises :class:`dlp.MalformedBody` (invalid or duplicate-key JSON under a JSON content type)
    and :class:`dlp.BinaryBody` (binary body with ``on_binary="block"``).
    """
    plan = plan_for(obligations)
    media, declared = _media_type(content_type or "")
    charset = _effective_charset(media, declared)
    text = None if media in _BINARY_TYPES or media.startswith(_BINARY_PREFIXES) else _decode(body, charset)
    if text is None:
        if obligations.on_binary == "block":
            raise BinaryBody(f"body of type {media or 'unknown'!r} is binary or not {charset} text")
        return Result(body, False, {}, (), True)
    if not (plan.names or plan.paths or plan.text_detectors or plan.field_detectors):
        return Result(body, False)
    if media in _NDJSON_TYPES:
        new_text, found = _redact_ndjson(text, plan)
    elif _is_json(media):
        new_text, found = _redact_json_text(text, plan)
    elif media == _FORM_TYPE:
        new_text, found = _redact_form(text, plan)
    else:
        new_text, found = _redact_text(text, plan)
    if not found:
        return Result(body, False)
    counts = dict(Counter(r.type for r in found))
    # Original characters all came from this charset; only a replacement can fall outside it
    # (partial IBANs hold "…"), and becomes "?" rather than an encoding error.
    new_body = new_text.encode(charset, "surrogatepass" if charset.replace("-", "") == "utf8" else "replace")
    return Result(new_body, new_body != body, counts, tuple(found))


def _redact_json_text(text: str, plan: Plan, prefix: str = "") -> tuple[str, list[Redaction]]:
    return _json.redact_text(text, plan, prefix)


def _redact_ndjson(text: str, plan: Plan) -> tuple[str, list[Redaction]]:
    lines = text.split("\n")
    found: list[Redaction] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            new, line_found = _redact_json_text(line, plan, f"{i + 1}:")
        except InvalidJson as exc:
            raise type(exc)(f"line {i + 1}: {exc.message}") from exc
        if line_found:
            lines[i] = new + ("\r" if line.endswith("\r") else "")
            found.extend(line_found)
    return "\n".join(lines), found


def _redact_text(text: str, plan: Plan) -> tuple[str, list[Redaction]]:
    (findings,) = scan_segments([text], [key_hint("")], plan.text_detectors, plan.limits)
    if not findings:
        return text, []
    mode, key = plan.mode, plan.hash_key
    new = _json.splice(text, findings, lambda f, span: replacement(f[0], span, mode, key))
    return new, [Redaction(f[0], "text", f[1], f[2], "detector") for f in findings]


def _redact_form(text: str, plan: Plan) -> tuple[str, list[Redaction]]:
    pairs = text.split("&")
    found: list[Redaction] = []
    queued: list[tuple[int, str, str]] = []  # (pair index, raw key, decoded value)
    drop: set[int] = set()
    for i, pair in enumerate(pairs):
        raw_key, sep, raw_value = pair.partition("=")
        name = unquote_plus(raw_key, errors="surrogateescape")
        value = unquote_plus(raw_value, errors="surrogateescape")
        hint = key_hint(name)
        if OWN_TOKEN.fullmatch(value):
            continue  # already redacted
        if plan.field_named([name], name) or (hint.type in plan.field_detectors and value):
            typ = hint.type or FIELD
            found.append(Redaction(typ, "form:" + name, -1, -1, "field"))
            if plan.mode == "remove":
                drop.add(i)
            else:
                pairs[i] = raw_key + "=" + _quote(replacement(typ, value, plan.mode, plan.hash_key))
        elif sep and value and plan.text_detectors:
            queued.append((i, raw_key, value))
    results = scan_segments(
        [v for _, _, v in queued], [key_hint(unquote_plus(k)) for _, k, _ in queued], plan.text_detectors, plan.limits
    )
    mode, hkey = plan.mode, plan.hash_key
    for (i, raw_key, value), findings in zip(queued, results, strict=True):
        if not findings:
            continue
        name = unquote_plus(raw_key, errors="surrogateescape")
        found.extend(Redaction(f[0], "form:" + name, f[1], f[2], "detector") for f in findings)
        if mode == "remove":
            drop.add(i)
        else:
            new = _json.splice(value, findings, lambda f, span: replacement(f[0], span, mode, hkey))
            pairs[i] = raw_key + "=" + _quote(new)
    return "&".join(p for i, p in enumerate(pairs) if i not in drop), found


def _quote(value: str) -> str:
    return quote_plus(value, safe="*[]:@", errors="surrogateescape")
