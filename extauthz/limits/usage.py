"""Token usage in model responses (ext_proc's side of cost budgets).

OpenAI-style ``{"usage": {"prompt_tokens", "completion_tokens"}}`` and Anthropic-style
``{"usage": {"input_tokens", "output_tokens"}}`` JSON bodies (gzip/deflate decoded).
Anything else reads as no usage: cost budgets then count only their fixed cost.
"""

from __future__ import annotations

import gzip
import json
import zlib

# Both vendors' names → ours.
_ALIASES = {
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
}


def usage_tokens(body: bytes, encoding: str = "") -> dict[str, int]:
    """``{"input_tokens": n, "output_tokens": m}`` from a response body, or {} when it has none."""
    try:
        if encoding in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding not in ("", "identity"):
            return {}
        document = json.loads(body)
    except (OSError, EOFError, zlib.error, ValueError, RecursionError):  # the body is the tool's: anything goes
        return {}
    usage = document.get("usage") if isinstance(document, dict) else None
    if not isinstance(usage, dict):
        return {}
    out: dict[str, int] = {}
    for name, ours in _ALIASES.items():
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[ours] = out.get(ours, 0) + value
    return out
