"""Command line: ``python -m dlp.cli scan|redact`` (and ``aegis dlp …``, which calls :func:`main`).

``scan``            read all of stdin as one text, print ``{"findings": [...]}``.
``scan --jsonl``    read JSON Lines ``{"text": "..."}``; print one result line per input line;
                    a bad line prints ``{"error": "..."}`` and processing continues.
``redact [FILE]``   redact FILE (or stdin) to stdout: ``--content-type``, ``--fields``,
                    ``--detectors``, ``--mode``, ``--on-binary``; the HMAC key for ``--mode hash``
                    is read from the environment variable named by ``--hash-key-env``.

Exit status: 0 success (also when some JSONL lines had errors), 1 a body was refused
(:class:`dlp.DlpError`, its code printed on stderr as JSON), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from dlp._errors import DlpError
from dlp._obligations import Obligations
from dlp._redact import redact
from dlp._scan import scan
from dlp._types import Finding

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
DEFAULT_HASH_KEY_ENV = "DLP_HASH_KEY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlp", description="Detect and redact PII and secrets.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_scan = sub.add_parser("scan", help="report findings (types and offsets, never values)")
    p_scan.add_argument("--jsonl", action="store_true", help='stdin is JSON Lines of {"text": "..."}')
    p_scan.add_argument("--detectors", default="ALL", help="comma-separated detector names or ALL")
    p_red = sub.add_parser("redact", help="redact a body to stdout")
    p_red.add_argument("file", nargs="?", help="input file (default: stdin)")
    p_red.add_argument("--content-type", default="text/plain", help="the body's Content-Type")
    p_red.add_argument("--fields", default="", help="comma-separated field names or JSON paths")
    p_red.add_argument("--detectors", default="", help="comma-separated detector names or ALL")
    p_red.add_argument("--mode", default="mask", choices=("mask", "partial", "hash", "remove"))
    p_red.add_argument("--on-binary", default="pass", choices=("pass", "block"))
    p_red.add_argument("--hash-key-env", default=DEFAULT_HASH_KEY_ENV, help="env var holding the HMAC key")
    p_red.add_argument("--summary", action="store_true", help="print per-type counts as JSON on stderr")
    return parser


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"type": f.type, "start": f.start, "end": f.end, "confidence": f.confidence}


def _scan_line(raw: bytes, detectors: Sequence[str]) -> dict[str, Any]:
    """One JSONL input line → its output object (errors never stop the stream)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {"error": "line is not valid UTF-8"}
    except ValueError as exc:
        return {"error": f"line is not valid JSON: {exc.__class__.__name__}"}
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return {"error": 'expected an object with a string "text"'}
    return {"findings": [_finding_json(f) for f in scan(obj["text"], detectors=detectors)]}


def _run_scan(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO) -> int:
    detectors = [d for d in args.detectors.split(",") if d.strip()]
    scan("", detectors=detectors)  # validate names once, before reading input
    if args.jsonl:
        for line in stdin:
            out = _scan_line(line.rstrip(b"\r\n"), detectors)
            stdout.write(json.dumps(out).encode() + b"\n")
            stdout.flush()
        return EXIT_OK
    text = stdin.read().decode("utf-8", "replace")
    findings = [_finding_json(f) for f in scan(text, detectors=detectors)]
    stdout.write(json.dumps({"findings": findings}).encode() + b"\n")
    return EXIT_OK


def _run_redact(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO) -> int:
    key_text = os.environ.get(args.hash_key_env)
    obligations = Obligations.from_dict(
        {"fields": args.fields, "detectors": args.detectors, "mode": args.mode, "on_binary": args.on_binary},
        hash_key=key_text.encode() if key_text else None,
    )
    if args.file:
        with open(args.file, "rb") as fh:
            body = fh.read()
    else:
        body = stdin.read()
    result = redact(body, args.content_type, obligations)
    stdout.write(result.body)
    stdout.flush()
    if args.summary:
        sys.stderr.write(json.dumps({"changed": result.changed, "counts": result.counts}) + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    """Run the CLI with ``argv`` (without the program name); returns the exit status."""
    try:
        args = _parser().parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    in_stream = stdin if stdin is not None else sys.stdin.buffer
    out_stream = stdout if stdout is not None else sys.stdout.buffer
    try:
        if args.command == "scan":
            return _run_scan(args, in_stream, out_stream)
        return _run_redact(args, in_stream, out_stream)
    except DlpError as exc:
        sys.stderr.write(json.dumps({"error": exc.code, "message": exc.message}) + "\n")
        return EXIT_USAGE if exc.code in ("obligations_invalid", "unknown_detector") else EXIT_REFUSED
    except OSError as exc:
        sys.stderr.write(json.dumps({"error": "io_error", "message": str(exc)}) + "\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
