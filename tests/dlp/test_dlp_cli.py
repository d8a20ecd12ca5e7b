"""The CLI, end to end through ``python -m dlp.cli`` (subprocess) and in-process for edge cases."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import dlp.cli

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], stdin: bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dlp.cli", *args], input=stdin, capture_output=True, cwd=ROOT, timeout=60, env=env
    )


def test_scan_jsonl_one_output_line_per_input_line() -> None:
    lines = [
        json.dumps({"text": "mail me at jane@example.com"}),
        "not json",
        json.dumps({"text": 5}),
        json.dumps(["text"]),
        "",
        json.dumps({"text": "card 4111 1111 1111 1111 and ssn 123-45-6789"}),
    ]
    proc = run(["scan", "--jsonl"], ("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(out) == len(lines) + 1
    assert out[0] == {"findings": [{"type": "EMAIL", "start": 11, "end": 27, "confidence": 0.99}]}
    assert all("error" in o for o in out[1:5]) and "error" in out[6]
    assert [f["type"] for f in out[5]["findings"]] == ["CREDIT_CARD", "SSN"]


def test_scan_whole_stdin() -> None:
    proc = run(["scan"], "Grüße ✉ jane@example.com".encode())
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"findings": [{"type": "EMAIL", "start": 8, "end": 24, "confidence": 0.9}]}


def test_redact_file(tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"ssn": "123-45-6789", "dob": "1985-03-12", "note": "jane@example.com", "n": 1}))
    proc = run(
        [
            "redact",
            str(path),
            "--content-type",
            "application/json",
            "--fields",
            "ssn,dob",
            "--detectors",
            "ALL",
            "--mode",
            "mask",
        ],
        b"",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "ssn": "[REDACTED:SSN]",
        "dob": "[REDACTED:DATE_OF_BIRTH]",
        "note": "[REDACTED:EMAIL]",
        "n": 1,
    }


def test_redact_stdin_hash_mode_reads_key_from_env() -> None:
    env = {"PATH": "/usr/bin:/bin", "DLP_HASH_KEY": "k" * 32}
    proc = run(["redact", "--detectors", "EMAIL", "--mode", "hash"], b"to jane@example.com", env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"to [EMAIL:") and len(proc.stdout) == len(b"to [EMAIL:]") + 12


def test_redact_invalid_json_is_refused_with_code() -> None:
    proc = run(["redact", "--content-type", "application/json", "--detectors", "ALL"], b'{"a": 1, "a": 2}')
    assert proc.returncode == 1
    assert json.loads(proc.stderr)["error"] == "malformed_body"


def test_usage_errors_return_2() -> None:
    assert dlp.cli.main(["nope"]) == 2
    out = io.BytesIO()
    assert dlp.cli.main(["scan", "--detectors", "PASSPORT"], stdin=io.BytesIO(b"x"), stdout=out) == 2
    assert (
        dlp.cli.main(
            ["redact", "--mode", "hash", "--detectors", "ALL", "--hash-key-env", "DLP_NO_SUCH_VAR"],
            stdin=io.BytesIO(b"x"),
            stdout=out,
        )
        == 2
    )


def test_main_in_process_with_detector_filter() -> None:
    out = io.BytesIO()
    code = dlp.cli.main(
        ["scan", "--detectors", "PHONE"], stdin=io.BytesIO(b"jane@example.com +1 415-555-0132"), stdout=out
    )
    assert code == 0
    assert [f["type"] for f in json.loads(out.getvalue())["findings"]] == ["PHONE"]
