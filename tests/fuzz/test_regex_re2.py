"""ReDoS audit: every regular expression Aegis compiles is RE2-compatible (or provably linear).

How the regexes are enumerated, so that a new one cannot slip past:

1. A child process wraps ``re._compile`` (which every ``re`` function goes through) before
   importing anything, then imports every module of ``extauthz`` and ``dlp`` and exercises
   the code paths that compile patterns lazily (DLP scans and redactions of every detector,
   IBAN and phone validation, the policy catalogue).  Each compiled pattern is recorded with
   the file and function that asked for it.
2. The AST of every module lists every ``re.<function>(…)`` call site; each must have been
   observed in step 1 (an unexercised site fails the test until this audit covers it).

Each recorded pattern of our code must compile with RE2 (``google-re2``, the engine policy
regexes run on), whose matching time is linear in the input.  The only exceptions are
patterns whose sole non-RE2 constructs are one-character look-arounds around a repetition-free
body (the DLP keyword patterns of the pure-``re`` fallback): a width-1 assertion inspects
one character, so such a pattern does a bounded amount of work per position.

Third-party *data* compiled by our code (libphonenumber's per-country number patterns, the
IBAN registry's BBAN shapes) is checked too, but reported separately: it only ever runs on a
bounded candidate (a phone number of at most 17 digits, a BBAN of at most 30 characters).
Policy-supplied ``matches`` patterns are validated with RE2 by the parser and run by RE2,
OPA (Go regexp) or rego-cpp (RE2); the last test proves they never reach a backtracking engine.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import re2

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("extauthz", "dlp")
RE_FUNCTIONS = {"compile", "search", "match", "fullmatch", "sub", "subn", "split", "findall", "finditer"}
THIRD_PARTY_DATA_SITES = {("dlp/_phone.py", "_compile"), ("dlp/_checks.py", "_iban_country")}
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False

# The child: record every pattern compiled by our code, then exercise the lazy compile paths.
_RECORDER = r"""
import json, pathlib, re, sys
repo = pathlib.Path(sys.argv[1]).resolve()
seen = []
original = re._compile

def recording(pattern, flags):
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.endswith(("/re/__init__.py", "/re/_compiler.py")):
        frame = frame.f_back
    while frame is not None and frame.f_code.co_name in ("<listcomp>", "<genexpr>", "<dictcomp>", "<setcomp>"):
        frame = frame.f_back  # a comprehension belongs to the function (or module) around it
    path = pathlib.Path(frame.f_code.co_filename).resolve() if frame is not None else None
    if path is not None and path.is_relative_to(repo) and path.parts[len(repo.parts)] in ("extauthz", "dlp"):
        text = pattern.decode("latin-1") if isinstance(pattern, bytes) else pattern
        flag_value = flags.value if hasattr(flags, "value") else int(flags)
        seen.append([str(path.relative_to(repo)), frame.f_code.co_name, text, flag_value])
    return original(pattern, flags)

re._compile = recording
import pkgutil, importlib, extauthz, dlp
for package in (extauthz, dlp):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
from dlp import _engine, _checks, _phone  # noqa: E402
import phonenumbers  # noqa: E402
pii = ("jane.doe@example.com +1 415-555-0132 +44 20 7946 0958 0176 12345678 123-45-6789 "
       "4111 1111 1111 1111 DE89 3704 0044 0532 0130 00 GB82 WEST 1234 5698 7654 32 203.0.113.42 "
       "2001:db8::1 born 1990-04-12 AKIAIOSFODNN7EXAMPLE api_key=abcdef123456 ghp_" + "a" * 36)
for mode in ("mask", "partial", "hash", "remove"):
    for kind in ("application/json", "text/plain", "application/x-www-form-urlencoded", "application/x-ndjson"):
        body = json.dumps({"note": pii, "email": "x@y.z"}) if "json" in kind else "note=" + pii
        dlp.redact(body.encode(), kind, dlp.Obligations(detectors=("ALL",), fields=("$..dob", "email"),
                                                          mode=mode, hash_key=b"k" * 32))
_engine._scan_re_factory()(pii)
for region in sorted(phonenumbers.SUPPORTED_REGIONS)[:40]:
    example = phonenumbers.example_number(region)
    if example is not None:
        dlp.scan(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL))
for code in ("DE", "GB", "FR", "NL", "ES", "IT", "CH", "BE"):
    _checks.iban_ok(code + "00" + "1" * 18)
from dlp import _native  # noqa: E402
_native.tables()
from extauthz.tools import compile_path_template  # noqa: E402
from extauthz.policy.parser import load_policy_dir  # noqa: E402
for spec in load_policy_dir(repo / "policies").tools.values():
    compile_path_template(spec.path)
compile_path_template("/tenants/{tenant_id}/records/{record_id}.json")
import tempfile, yaml  # noqa: E402
from extauthz.config import _redact_url, load_config  # noqa: E402
from fuzz.targets.service import write_fuzz_config  # noqa: E402
_redact_url("redis://user:secret@127.0.0.1:6379/0")
scratch = pathlib.Path(tempfile.mkdtemp())
load_config(write_fuzz_config(scratch, {"upstreams": {"payments.demo": "http://127.0.0.1:9"}}))
policy = yaml.safe_load((repo / "policies" / "support.yaml").read_text())
policy["rules"][0]["when"] = [{"arg": "channel", "matches": "^#[a-z]{1,20}$"}]
(scratch / "p").mkdir()
(scratch / "p" / "support.yaml").write_text(yaml.safe_dump(policy))
load_policy_dir(scratch / "p")
print(json.dumps(seen))
"""


@cache
def recorded() -> list[tuple[str, str, str, int]]:
    # The Python path of dlp (the compiled core's regexes are Rust's finite automata, linear by
    # construction); the core's table export still runs, below.
    env = {**os.environ, "AEGIS_DLP_NATIVE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _RECORDER, str(REPO)], capture_output=True, text=True, cwd=REPO, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(entry) for entry in json.loads(done.stdout.strip().splitlines()[-1])]


def _call_sites() -> set[tuple[str, str]]:
    """(file, enclosing function) of every ``re.<function>(…)`` call in our packages."""
    sites = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for function, node in _walk(tree, "<module>"):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "re"
                    and node.func.attr in RE_FUNCTIONS
                ):
                    sites.add((str(path.relative_to(REPO)), function))
    return sites


def _walk(node: ast.AST, function: str):
    for child in ast.iter_child_nodes(node):
        name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        yield name, child
        yield from _walk(child, name)


def _re2_compatible(pattern: str, flags: int) -> str | None:
    """None if RE2 compiles the pattern (with the same case and dot flags), else RE2's error."""
    prefix = (
        ("i" if flags & re.IGNORECASE else "")
        + ("s" if flags & re.DOTALL else "")
        + ("m" if flags & re.MULTILINE else "")
    )
    try:
        re2.compile(f"(?{prefix}){pattern}" if prefix else pattern, _OPTIONS)
    except re2.error as exc:
        return str(exc.args[0] if exc.args else exc)
    return None


_BIG_COUNT = re.compile(r"(\[(?:\\.|[^\]\\])*\]|\\.|[^\\()\[\]{}|])\{(\d+)(?:,(\d+))?\}")
_LOOKAROUND = re.compile(r"\(\?<?[=!](?:\[(?:\\.|[^\]\\])*\]|\\.|[^\\()])\)")


def _split_counts(match: re.Match[str]) -> str:
    """``[x]{4,8000}`` → ``[x]{4,1000}[x]{0,1000}…``: the same language within RE2's count cap."""
    atom, low, high = match.group(1), int(match.group(2)), match.group(3)
    top = low if high is None else int(high)
    if top <= 1000:
        return match.group(0)
    parts, remaining_low, remaining_high = [], low, top
    while remaining_high > 0:
        step = min(remaining_high, 1000)
        parts.append(f"{atom}{{{min(remaining_low, step)},{step}}}")
        remaining_low, remaining_high = max(remaining_low - step, 0), remaining_high - step
    return "".join(parts)


def _single_char_checks_only(pattern: str, flags: int) -> bool:
    """Every look-around and back-reference of the pattern inspects exactly one character."""
    parsed = re._parser.parse(pattern, flags)  # type: ignore[attr-defined]
    widths = parsed.state.groupwidths
    ok = True

    def visit(items) -> None:
        nonlocal ok
        for op, av in items:
            name = str(op)
            if name in ("ASSERT", "ASSERT_NOT"):
                ok = ok and av[1].getwidth() == (1, 1)
            elif name == "GROUPREF":
                ok = ok and widths[av] == (1, 1)
            elif name == "GROUPREF_EXISTS":
                ok = False
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                visit(av[2])
            elif name == "SUBPATTERN":
                visit(av[-1])
            elif name == "BRANCH":
                for branch in av[1]:
                    visit(branch)

    visit(parsed)
    return ok


def _linear_by_construction(pattern: str, flags: int) -> bool:
    """Not RE2 syntax only through single-character checks RE2 lacks (a width-1 look-around, a
    back-reference to a one-character group) or counts above RE2's cap of 1000: with those
    rewritten (dropped, replaced by the group's class, split), RE2 compiles the pattern."""
    if not _single_char_checks_only(pattern, flags):
        return False
    rewritten = _LOOKAROUND.sub("", pattern)
    for name, body in re.findall(r"\(\?P<(\w+)>(\[[^\]]*\]|\\.|.)\)", rewritten):
        rewritten = rewritten.replace(f"(?P={name})", body)
    rewritten = _BIG_COUNT.sub(_split_counts, rewritten)
    return _re2_compatible(rewritten, flags) is None


def test_every_regex_call_site_is_exercised_by_the_audit():
    observed = {(path, function) for path, function, _, _ in recorded()}
    missing = sorted(site for site in _call_sites() if site not in observed)
    assert not missing, f"re call sites the audit does not reach (exercise them in _RECORDER): {missing}"


def test_our_regexes_are_re2_compatible_or_linear_by_construction():
    assert len(recorded()) > 50  # the recorder saw the DLP tables, validators, config and tool patterns
    refused = []
    for path, function, pattern, flags in sorted(set(recorded())):
        if (path, function) in THIRD_PARTY_DATA_SITES:
            continue
        if _re2_compatible(pattern, flags) is None or _linear_by_construction(pattern, flags):
            continue
        refused.append((path, function, pattern[:120]))
    assert not refused, refused


# Python's ``re`` backtracks, so RE2 syntax alone does not make it linear: ``(a+)+$`` is RE2
# syntax and exponential there.  Nested repetition is what makes it so; each nested repetition
# in our code was reviewed and is unambiguous — every iteration of the outer repetition ends
# (or starts) with a character the inner one cannot match, so there is one way to split a text
# into iterations and a failed match backtracks a bounded distance.
REVIEWED_NESTED_REPETITION = {
    # IPv6 groups: each iteration starts with ":", which no hex digit matches.
    r"(?:\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::",
    r"\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}\b",
    # PEM label words: each iteration ends with a space, which [A-Z0-9] does not match.
    r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----",
    # Domain labels: each iteration ends with ".", which no label character matches.
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{1,63}",
    # Phone groups: separators and digits alternate; the two classes share no character.
    r"\+?[ .\-/()]*[0-9]+(?:[ .\-/()]+[0-9]{2,}){0,5}",
}


def _nested_repetition(pattern: str, flags: int) -> bool:
    """Whether a repetition (of more than one) holds another repetition of more than one."""
    found = False

    def visit(items, inside: bool) -> None:
        nonlocal found
        for op, av in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                found = found or (inside and av[1] > 1)
                visit(av[2], inside or av[1] > 1)
            elif name == "SUBPATTERN":
                visit(av[-1], inside)
            elif name == "BRANCH":
                for branch in av[1]:
                    visit(branch, inside)
            elif name in ("ASSERT", "ASSERT_NOT"):
                visit(av[1], inside)

    visit(re._parser.parse(pattern, flags), False)  # type: ignore[attr-defined]
    return found


def test_no_unreviewed_nested_repetition_for_the_backtracking_engine():
    nested = {
        pattern
        for path, function, pattern, flags in recorded()
        if (path, function) not in THIRD_PARTY_DATA_SITES and _nested_repetition(pattern, flags)
    }
    assert nested <= REVIEWED_NESTED_REPETITION, sorted(nested - REVIEWED_NESTED_REPETITION)
    assert _nested_repetition(r"(a+)+$", 0) and not _nested_repetition(r"(?:[ \-]?\d){11,18}", 0)


def test_third_party_pattern_data_is_re2_compatible_or_bounded():
    """libphonenumber and the IBAN registry: RE2-compatible as well (they only ever see
    candidates of bounded length, so even a backtracking engine stays bounded)."""
    data = {(p, f, pattern, flags) for p, f, pattern, flags in recorded() if (p, f) in THIRD_PARTY_DATA_SITES}
    assert data
    assert [pattern for _, _, pattern, flags in data if _re2_compatible(pattern, flags)] == []


def test_the_audit_can_fail():
    """The checks are not vacuous: classic ReDoS shapes are refused, the keyword shape accepted."""
    assert _re2_compatible(r"(a)\1", 0) is not None
    assert not _linear_by_construction(r"(?<=ab)x", 0)  # a two-character look-behind
    assert not _linear_by_construction(r"(a+)\1", 0)  # a back-reference to a variable-width group
    assert not _linear_by_construction(r"(?<![a-z])(?P<x>ab)(?P=x)", 0)
    assert _linear_by_construction(r"(?<![a-z0-9])born(?=[^a-z])", re.IGNORECASE)
    assert _linear_by_construction(r"(?P<q>['\"])[^'\"]{0,256}(?P=q)", 0)
    assert _linear_by_construction(r"[a-z]{0,2000}\.x", 0) and _re2_compatible(r"[a-z]{0,2000}", 0) is not None


def test_policy_regexes_run_on_re2_not_a_backtracking_engine():
    """``(a+)+$`` takes 2^n steps on ``a…ab`` in a backtracking engine (hours at n=40); the
    native engine answers at once because the parser validated it for, and the engine ran it
    on, RE2.  In a child process so a regression fails instead of hanging the suite."""
    code = (
        "from extauthz.engine.native import compile_condition\n"
        "p = compile_condition({'subject': {'kind': 'arg', 'key': 'x'}, 'op': 'matches', 'value': '(a+)+$'})\n"
        "print(p({'tool': {'args': {'x': 'a' * 40 + 'b'}}}), p({'tool': {'args': {'x': 'a' * 40}}}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True"]
