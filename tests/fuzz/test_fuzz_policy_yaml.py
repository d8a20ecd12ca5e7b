"""Property-based fuzzing of the policy YAML loader (bounded; the atheris harness is fuzz/policy_yaml.py).

Mutated versions of policies/*.yaml — structurally (a value replaced, a key dropped or
renamed) and textually (lines deleted, duplicated, characters inserted) — must load or fail
with a PolicyError naming ``file:line`` (``fuzz.targets.policy_yaml``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from fuzz_strategies import FUZZ_SETTINGS, TEXT
from hypothesis import given
from hypothesis import strategies as st

from extauthz.errors import PolicyError
from extauthz.policy.bundle import build_bundle
from fuzz.targets import policy_yaml as target

SEEDS = [path.read_text(encoding="utf-8") for path in target.SEEDS]
REPLACEMENTS = st.one_of(
    TEXT,
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(TEXT, max_size=3),
    st.dictionaries(TEXT, TEXT, max_size=2),
    st.sampled_from(["(a)\\1", "(?P<x>a)(?P=x)", "a{1001}", "a++", "(?>a)", "[", "*", "default-deny", "Mon"]),
)
INSERTS = st.sampled_from(
    [
        "&a ",
        "*a",
        "<<: ",
        "!!python/object ",
        "!!binary ",
        "? ",
        "\t",
        "[",
        "{",
        "'",
        '"',
        "\x01",
        "\ufeff",
        " - ",
        ": ",
        "#",
        "---\n",
        "%YAML 1.1\n",
    ]
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def structural(draw: st.DrawFn) -> bytes:
    document = yaml.safe_load(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(document))[1:]))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "drop", "rename"]))
        if action == "replace" or isinstance(parent, list):
            parent[path[-1]] = draw(REPLACEMENTS)
        elif action == "drop":
            del parent[path[-1]]
        else:
            parent[draw(TEXT)] = parent.pop(path[-1])
        if not isinstance(document, dict):
            break
    return yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")


@st.composite
def textual(draw: st.DrawFn) -> bytes:
    lines = draw(st.sampled_from(SEEDS)).splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "insert"]))
        if action == "delete" and len(lines) > 1:
            del lines[at]
        elif action == "duplicate":
            lines.insert(at, lines[at])
        else:
            column = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:column] + draw(INSERTS) + lines[at][column:]
    return "".join(lines).encode("utf-8", "surrogatepass")


@FUZZ_SETTINGS
@given(st.one_of(structural(), textual()), st.booleans())
def test_mutated_policies_load_or_fail_with_file_and_line(text, with_repo_policies):
    target.exercise(target.Case(text, with_repo_policies))


SUPPORT = (target.POLICIES / "support.yaml").read_text(encoding="utf-8")


def _rule_matching(pattern: str) -> bytes:
    condition = '{arg: channel, in: ["#support", "#billing"]}'
    assert condition in SUPPORT
    return SUPPORT.replace(condition, f"{{arg: channel, matches: '{pattern}'}}").encode()


DUPLICATE_ROUTE = SUPPORT.replace(
    "  crm.get_record:",
    '  crm.copy:\n    match: {host: crm.demo, method: GET, path: "/tenants/{tenant_id}/records/{record_id}"}\n'
    "  crm.get_record:",
).encode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Found by fuzzing: patterns Python's re accepts and RE2 refuses crashed activation (re2.error).
        (_rule_matching("(?P<x>a)(?P=x)"), "RE2 syntax"),
        (_rule_matching("a++"), "RE2 syntax"),
        (_rule_matching("a{1001}"), "RE2 syntax"),
        (_rule_matching("(?>a)"), "RE2 syntax"),
        # Found by fuzzing: errors without a line (control character, non-UTF-8, duplicate route).
        (b"policy_set: x\ndescription: \x01\n", r"zz-fuzzed.yaml:2: not valid YAML: character U\+0001"),
        (b"policy_set: x\ndescription: \xff\n", "zz-fuzzed.yaml:2: not UTF-8"),
        (DUPLICATE_ROUTE, r"zz-fuzzed.yaml:\d+: tools.crm.get_record.match: tools 'crm.copy' and 'crm.get_record'"),
        # Found by fuzzing (atheris): a sequence tagged !!set reached the mapping constructor (ValueError).
        (b"policy_set: !!set [a, b]\n", "zz-fuzzed.yaml:1: not valid YAML: expected a mapping, found sequence"),
        # Found by fuzzing: ~300 nested brackets hit Python's recursion limit while constructing.
        (b"policy_set: " + b"[" * 400 + b"]" * 400, "zz-fuzzed.yaml:1: not valid YAML: nested deeper than 64"),
    ],
)
def test_fuzz_findings_fail_with_file_and_line(text, message):
    assert target.exercise(target.Case(text)) is False  # refused, with file:line (the target checks)
    with pytest.raises(PolicyError, match=message):
        build_bundle(target.workdir() / "alone")  # the directory holding the file just written


def test_deep_nesting_does_not_crash_the_process(tmp_path):
    """Found by fuzzing: LibYAML's composer recursed in C and segfaulted on 100k nested
    brackets.  In a child process, so a regression fails this test instead of killing pytest."""
    policy = tmp_path / "deep.yaml"
    policy.write_text("policy_set: " + "[" * 100_000 + "]" * 100_000, encoding="utf-8")
    code = (
        "import sys; from pathlib import Path; from extauthz.policy.source import read_policy_file\n"
        "from extauthz.errors import PolicyError\n"
        "try:\n    read_policy_file(Path(sys.argv[1]))\nexcept PolicyError as e:\n    print(e.message)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(policy)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{policy}:1: not valid YAML: nested deeper than 64 levels" in done.stdout


def test_the_repo_policies_load():
    """The oracle can pass: an unmutated seed loads (not every input is refused)."""
    assert target.exercise(target.Case(SUPPORT.encode()))
