"""Which tool is being called, with which arguments.

The catalogue (part of the policy set) maps host + method + path template to a tool name.
Arguments come from path parameters, the query string and the JSON or form body, or, for
MCP servers, from a JSON-RPC ``tools/call`` body (``params.name`` / ``params.arguments``).

Matching runs on the path exactly as Envoy routes it (the generated Envoy config
normalises paths and merges slashes before ext_authz sees them).  Anything ambiguous is
refused rather than guessed: duplicate JSON keys (also keys differing only in case), NaN,
numbers a 64-bit float cannot hold exactly, a charset other than UTF-8, a body whose content
type does not match what the tool declares, an argument given twice with different values,
and requests asking the upstream to run another method or path than the one authorised
(``X-HTTP-Method-Override``, ``X-Original-URL``, ``_method``…).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, unquote

from extauthz.errors import MalformedBody, RequestError
from extauthz.request_limits import (
    MAX_ARGUMENT_KEYS,
    MAX_QUERY_PARAMS,
    check_arguments,
    too_many_fields,
    too_many_params,
)

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_JSON_DEPTH = 32
# I-JSON (RFC 7493): integers beyond 2^53 - 1 are read differently by double-based parsers.
MAX_SAFE_INTEGER = 2**53 - 1
# Frameworks (Rails, Laravel, Symfony, IIS, OData…) let these change the method or path an
# upstream executes after Envoy has routed and Aegis has judged the request: refused.
OVERRIDE_HEADERS = (
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
)
OVERRIDE_ARGUMENT = "_method"
_UTF8 = frozenset({"utf-8", "utf8"})
_ARG_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True)
class ArgSpec:
    """A declared argument: its JSON type and whether the call must carry it."""

    type: str | None = None
    required: bool = False


@dataclass(frozen=True)
class ToolSpec:
    """One catalogue entry."""

    name: str
    host: str
    method: str
    path: str
    body: str = "json"  # json | form | none
    mcp_tool: str | None = None
    args: Mapping[str, ArgSpec] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        """The catalogue entry as bundle data."""
        data: dict[str, Any] = {
            "match": {"host": self.host, "method": self.method, "path": self.path},
            "body": self.body,
            "args": {k: {"type": a.type, "required": a.required} for k, a in self.args.items()},
        }
        if self.mcp_tool:
            data["match"]["mcp_tool"] = self.mcp_tool
        return data

    @staticmethod
    def from_data(name: str, data: Mapping[str, Any]) -> ToolSpec:
        """Inverse of ``to_data``."""
        match = data["match"]
        return ToolSpec(
            name=name,
            host=match["host"],
            method=match["method"],
            path=match["path"],
            body=data.get("body", "json"),
            mcp_tool=match.get("mcp_tool"),
            args={k: ArgSpec(v.get("type"), bool(v.get("required"))) for k, v in data.get("args", {}).items()},
        )


@dataclass(frozen=True)
class HttpRequest:
    """The parts of the agent's HTTP request Aegis judges (from the Envoy adapter)."""

    method: str
    host: str
    path: str  # without the query string
    query: str
    headers: Mapping[str, str]
    body: bytes = b""
    body_truncated: bool = False


@dataclass(frozen=True)
class ToolCall:
    """A matched tool and its arguments; ``name`` is None for a call no tool matches."""

    name: str | None
    args: Mapping[str, Any]
    path_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _CompiledTool:
    spec: ToolSpec
    pattern: re.Pattern[str]


def compile_path_template(template: str) -> re.Pattern[str]:
    """``/tenants/{tenant_id}`` → a regex with one named group per parameter (one path segment)."""
    parts: list[str] = []
    position = 0
    for m in _PARAM.finditer(template):
        parts.append(re.escape(template[position : m.start()]))
        parts.append(f"(?P<{m.group(1)}>[^/]+)")
        position = m.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


class ToolCatalogue:
    """Matches requests to tools; built once per policy version."""

    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        self._by_name = {spec.name: spec for spec in tools}
        self._by_route: dict[tuple[str, str], list[_CompiledTool]] = {}
        for spec in tools:
            compiled = _CompiledTool(spec, compile_path_template(spec.path))
            self._by_route.setdefault((spec.host, spec.method), []).append(compiled)

    def call(self, name: str, args: Mapping[str, Any]) -> ToolCall:
        """A call named directly (AuthZEN): declared arguments are checked as for HTTP calls;
        an unknown name stays unknown (the engine denies it)."""
        spec = self._by_name.get(name)
        if spec is not None:
            check_args(spec, args)
            return ToolCall(name, dict(args))
        return ToolCall(None, dict(args))

    def match(self, request: HttpRequest) -> ToolCall:
        """The tool this request calls and its arguments; RequestError if ambiguous."""
        refuse_overrides(request.headers)
        host = request.host.lower()
        host = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
        # Methods are case-sensitive (RFC 9110 §9.1) and the catalogue's are uppercase: over
        # HTTP/2 Envoy forwards a ``post`` that some upstreams would run as POST, so it must
        # match no tool rather than be judged as the POST it is not.
        candidates = self._by_route.get((host, request.method), [])
        for compiled in candidates:
            m = compiled.pattern.fullmatch(request.path)
            if m is None:
                continue
            params = {k: unquote(v) for k, v in m.groupdict().items()}
            body = parse_body(request, compiled.spec)
            if compiled.spec.mcp_tool is not None:
                call = _mcp_call(body)
                if call is None or call[0] != compiled.spec.mcp_tool:
                    continue
                body = call[1]
            args = merge_args(params, parse_query(request.query), body)
            if OVERRIDE_ARGUMENT in args:
                raise RequestError(
                    f"the {OVERRIDE_ARGUMENT} argument asks the tool to run another method; send the real one",
                    code="ambiguous_request",
                )
            check_args(compiled.spec, args)
            return ToolCall(compiled.spec.name, args, params)
        return ToolCall(None, {})


def refuse_overrides(headers: Mapping[str, str]) -> None:
    """RequestError if a header would make the upstream run another method or path."""
    for name in OVERRIDE_HEADERS:
        if name in headers:
            raise RequestError(
                f"the {name} header asks the tool to run another method or path than the one "
                "authorised; send the real method and path",
                code="ambiguous_request",
            )


def parse_query(query: str, *, form: bool = False) -> dict[str, Any]:
    """Query string (or form body) → args; a repeated key becomes a list."""
    limit = MAX_ARGUMENT_KEYS if form else MAX_QUERY_PARAMS
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=limit)
    except ValueError:  # more fields than max_num_fields
        raise (too_many_fields() if form else too_many_params()) from None
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = value
    if form:  # a query string is bounded by the header limits (request_limits.check_headers)
        check_arguments(out)
    return out


def parse_body(request: HttpRequest, spec: ToolSpec) -> dict[str, Any]:
    """The body's arguments per the tool's declared body format."""
    if not request.body:
        return {}
    content_type, _, parameters = request.headers.get("content-type", "").partition(";")
    content_type = content_type.strip().lower()
    if spec.body == "none":
        raise MalformedBody(f"tool {spec.name} takes no request body")
    _require_utf8(parameters)
    if spec.body == "json":
        if not (content_type == "application/json" or content_type.endswith("+json")):
            raise MalformedBody(f"tool {spec.name} expects a JSON body (content-type application/json)")
        document = parse_json(request.body)
        if spec.mcp_tool is None and not isinstance(document, dict):
            raise MalformedBody("the JSON body must be an object")
        return document if isinstance(document, dict) else {"_": document}
    if content_type != "application/x-www-form-urlencoded":
        raise MalformedBody(f"tool {spec.name} expects a form body (application/x-www-form-urlencoded)")
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("the form body is not UTF-8") from None
    return parse_query(text, form=True)


def _require_utf8(parameters: str) -> None:
    """A declared charset other than UTF-8 (utf-7, latin-1, utf-16…) makes the upstream read
    other characters than Aegis and DLP did: refused (RFC 8259 requires UTF-8 anyway)."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8:
            raise MalformedBody(f"the request body must be UTF-8, not charset {value.strip()[:32]!r}")


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, exact numbers, bounded nesting."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("the JSON body is not UTF-8") from None
    try:
        document = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_exact_float,
            parse_int=_safe_int,
        )
    except RecursionError:
        raise MalformedBody("the JSON body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            f"the JSON body does not parse: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    _check_depth(document, 0)
    check_arguments(document)  # sizes (413) and lone surrogates (400): extauthz/request_limits.py
    return document


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    folded: set[str] = set()
    for key, value in pairs:
        if key in result:
            # Parsers disagree on which duplicate wins; the upstream might read the other one.
            raise MalformedBody(f"the JSON body has a duplicate key {key[:64]!r}")
        if key.casefold() in folded:
            # Go's encoding/json (and others) match keys case-insensitively: {"amount": 10,
            # "AMOUNT": 1000} is a refund of 1000 there.
            raise MalformedBody(f"the JSON body has keys differing only in case ({key[:64]!r})")
        result[key] = value
        folded.add(key.casefold())
    return result


def _exact_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused unless a double holds it exactly
    as written: ``-1e400`` is -inf to Python and JavaScript but an error or a decimal
    elsewhere, and ``50.0000000000000001`` is 50 here but more than 50 to a decimal parser."""
    value = float(text)
    try:
        exact = math.isfinite(value) and Decimal(text) == Decimal(repr(value))
    except InvalidOperation:  # an exponent beyond Decimal's range (1e-99999999999999999999 is 0.0 as a float)
        exact = False
    if not exact:
        raise MalformedBody(
            f"the JSON number {_clip(text)} is out of range or more precise than a 64-bit float; "
            "parsers would disagree on its value"
        )
    return value


def _safe_int(text: str) -> int:
    """A JSON integer within ±(2^53 - 1) (I-JSON): beyond it parsers round differently."""
    if len(text) > 17 or abs(int(text)) > MAX_SAFE_INTEGER:
        raise MalformedBody(f"the JSON integer {_clip(text)} exceeds 2^53 - 1; parsers would disagree on its value")
    return int(text)


def _clip(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _no_constants(name: str) -> Any:
    raise MalformedBody(f"the JSON body contains {name}, which is not JSON")


def _check_depth(value: Any, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise MalformedBody(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, depth + 1)


def _mcp_call(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``{"method": "tools/call", "params": {"name": …, "arguments": {…}}}`` → (name, arguments)."""
    if body.get("jsonrpc") != "2.0" or body.get("method") != "tools/call":
        return None
    params = body.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        raise MalformedBody("MCP tools/call needs params.name")
    arguments = params.get("arguments", {})
    if not isinstance(arguments, dict):
        raise MalformedBody("MCP tools/call params.arguments must be an object")
    return params["name"], arguments


def merge_args(*sources: Mapping[str, Any]) -> dict[str, Any]:
    """Merge argument sources; the same name with different values is refused, not guessed."""
    merged: dict[str, Any] = {}
    for source in sources:
        for key, value in source.items():
            if key in merged and merged[key] != value:
                raise RequestError(
                    f"argument {key[:64]!r} is given twice with different values", code="ambiguous_argument"
                )
            merged[key] = value
    return merged


def check_args(spec: ToolSpec, args: Mapping[str, Any]) -> None:
    """Declared argument types and required arguments; RequestError naming the argument."""
    declared = {name.casefold(): name for name in spec.args}
    for key in args:
        if key not in spec.args and key.casefold() in declared:
            raise RequestError(
                f"argument {key[:64]!r} differs from the declared {declared[key.casefold()]!r} only in case",
                code="invalid_argument",
            )
    for name, arg in spec.args.items():
        if name not in args:
            if arg.required:
                raise RequestError(f"tool {spec.name} requires argument {name!r}", code="missing_argument")
            continue
        if arg.type is None:
            continue
        value = args[name]
        ok = isinstance(value, _ARG_TYPES[arg.type]) and not (isinstance(value, bool) and arg.type != "boolean")
        if not ok:
            raise RequestError(f"argument {name!r} of {spec.name} must be a {arg.type}", code="invalid_argument")
