"""Policy pipeline stages 1-2: every bad policy gets a message naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import POLICIES, copy_policy_dir

from extauthz.errors import PolicyError
from extauthz.policy import build_bundle, load_policy_dir, read_bundle, write_bundle

TOOLS = """
policy_set: t
tools:
  pay.refund:
    match: {host: pay.test, method: POST, path: /refund}
"""


def fails(tmp_path: Path, text: str) -> str:
    directory = copy_policy_dir(tmp_path / "p", text)
    with pytest.raises(PolicyError) as info:
        load_policy_dir(directory)
    return info.value.message


@pytest.mark.parametrize(
    ("extra", "line", "expected"),
    [
        ("rules:\n  - {id: r1, tools: [pay.refund], effect: alow}\n", 7, "rules[0].effect"),
        ("rules:\n  - {id: r1, tools: [nope.*], effect: allow}\n", 7, "no tool in the catalogue matches 'nope.*'"),
        (
            "rules:\n  - id: r1\n    tools: [pay.refund]\n    effect: allow\n    when:\n      - {arg: a, lte2: 5}\n",
            11,
            "unknown key",
        ),
        (
            "rules:\n  - id: r1\n    tools: [pay.refund]\n    effect: allow\n    when:\n      - {arg: a, matches: '(a)\\1'}\n",
            11,
            "RE2",
        ),
        (
            "rules:\n  - id: r1\n    tools: [pay.refund]\n    effect: allow\n    when:\n      - {arg: a, matches: '(unclosed'}\n",
            11,
            "invalid regular expression",
        ),
        (
            "rules:\n  - id: r1\n    tools: [pay.refund]\n    effect: allow\n    when:\n      - {calendar: nope}\n",
            11,
            "unknown calendar",
        ),
        ("rules:\n  - {id: r1, tools: [pay.refund], effect: sanitize}\n", 7, "redact.fields or redact.detectors"),
        ("rules:\n  - {id: r1, tools: [pay.refund], effect: approval_needed}\n", 7, "approval.approvers"),
        (
            "rules:\n  - {id: r1, tools: [pay.refund], effect: sanitize, redact: {fields: [ssn], over_limit: allow}}\n",
            7,
            "over_limit",
        ),
        (
            "rules:\n  - {id: r1, tools: [pay.refund], effect: allow, redact: {over_limit: pass}}\n",
            7,
            "redact is only meaningful with effect: sanitize",
        ),
        (
            "rules:\n  - {id: r1, tools: [pay.refund], effect: allow}\n  - {id: r1, tools: [pay.refund], effect: deny}\n",
            8,
            "already used",
        ),
        (
            "calendars:\n  bh: {timezone: Mars/Olympus, windows: [{days: [mon], start: '09:00', end: '17:00'}]}\n",
            7,
            "unknown time zone",
        ),
        (
            "rules:\n  - id: r1\n    tools: [pay.refund]\n    effect: allow\n    when:\n      - {arg: a, eq: {ref: token.x}}\n",
            11,
            "ref",
        ),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, extra, line, expected):
    message = fails(tmp_path, TOOLS + extra)
    assert f"p0.yaml:{line}:" in message
    assert expected in message


def test_malformed_yaml_and_duplicate_keys(tmp_path):
    assert "not valid YAML" in fails(tmp_path, "policy_set: t\ntools: [unclosed\n")
    message = fails(tmp_path, TOOLS + "tools: {}\n")
    assert "duplicate key 'tools'" in message


def test_tool_defined_twice_across_files(tmp_path):
    directory = copy_policy_dir(tmp_path / "p", TOOLS, TOOLS.replace("policy_set: t", "policy_set: u"))
    with pytest.raises(PolicyError) as info:
        load_policy_dir(directory)
    assert "already defined" in info.value.message


def test_missing_rego_library_is_an_error(tmp_path):
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "a.yaml").write_text(TOOLS)
    with pytest.raises(PolicyError) as info:
        build_bundle(directory)
    assert "package aegis" in info.value.message


def test_bundle_round_trip_and_tamper_detection(tmp_path):
    bundle = build_bundle(POLICIES)
    path = tmp_path / "b.tar.gz"
    write_bundle(bundle, path)
    again = read_bundle(path)
    assert again.revision == bundle.revision
    assert again.data == bundle.data
    # Same content, same version; any change, a new version.
    assert build_bundle(POLICIES).revision == bundle.revision
    raw = path.read_bytes()
    (tmp_path / "trunc.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PolicyError, match="truncated or corrupt"):
        read_bundle(tmp_path / "trunc.tar.gz")


def test_bundle_with_edited_data_is_rejected(tmp_path):
    import io
    import json
    import tarfile

    bundle = build_bundle(POLICIES)
    data = json.loads(json.dumps(bundle.data))
    data["rules_by_tool"]["payments.refund"] = []
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in {
            ".manifest": json.dumps({"revision": bundle.revision}),
            "aegis/policy/data.json": json.dumps(data),
            **bundle.modules,
        }.items():
            info = tarfile.TarInfo(name)
            blob = content.encode()
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (tmp_path / "t.tar.gz").write_bytes(out.getvalue())
    with pytest.raises(PolicyError, match="tampered"):
        read_bundle(tmp_path / "t.tar.gz")


def test_default_effect_cannot_need_approval_or_redaction(tmp_path):
    # A default has no approvers and no redaction fields to apply.
    assert "default_effect" in fails(
        tmp_path, TOOLS.replace("policy_set: t", "policy_set: t\ndefault_effect: approval_needed")
    )
