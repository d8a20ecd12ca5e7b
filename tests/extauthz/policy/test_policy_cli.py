"""``aegis policy test|lint|eval|diff``: outputs, exit codes, file:line messages."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import POLICIES, copy_policy_dir

from extauthz.cli import main
from extauthz.decision import Decision, Effect, Reason
from extauthz.policy import build_bundle
from extauthz.policy.explain import explain_rule
from extauthz.policy.testing import check_case, load_cases

STARTER_TESTS = POLICIES / "tests"


@pytest.mark.opa
def test_the_starter_policy_tests_pass_on_embedded_and_opa(capsys):
    """What `make test` runs: `aegis policy test policies --engine both`."""
    code = main(["policy", "test", str(POLICIES), "--engine", "both", "-v"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"^(\d+) passed, 0 failed$", out, re.M)
    assert "PASS: a refund of 20 is allowed" in out


def test_the_starter_tests_cover_every_rule_of_the_support_policy():
    """Every rule matches in some case and fails to match in another.  (Rules such as
    slack-allowed-channel never name the outcome: an unconditional sanitize rule of the
    same tool outranks allow — so coverage is counted on matches, not on reasons.)"""
    bundle = build_bundle(POLICIES)
    rules = {r["id"] for r in yaml.safe_load((POLICIES / "support.yaml").read_text())["rules"]}
    matched: set[str] = set()
    unmatched: set[str] = set()
    cases = load_cases(STARTER_TESTS)
    for case in cases:
        document = case.call.policy_input(bundle)
        for rule in bundle.data["rules_by_tool"].get(case.call.tool, []):
            (matched if explain_rule(rule, document)[0] else unmatched).add(rule["id"])
    assert rules - matched == set()
    assert rules - unmatched == {"slack-redact-pii", "crm-redact-pii"}  # unconditional
    assert {"default-deny", "scope-missing"} <= {rule for case in cases for rule in case.rules or ()}


@pytest.mark.parametrize("engine", ["embedded", "native", "regopy"])
def test_every_in_process_engine_passes_the_starter_tests(engine, capsys):
    assert main(["policy", "test", str(POLICIES), "--engine", engine]) == 0
    out = capsys.readouterr().out
    assert "PASS" not in out  # passing cases only with -v
    assert out.strip().endswith("passed, 0 failed")


def test_a_failing_case_is_reported_with_file_and_line(tmp_path, capsys):
    tests = tmp_path / "t.yaml"
    tests.write_text(
        "defaults: {agent: {id: a, tenant: acme, scopes: ['*']}}\n"
        "cases:\n"
        "  - name: right\n"
        "    tool: payments.refund\n"
        "    args: {amount: 20}\n"
        "    expect: {effect: allow}\n"
        "  - name: wrong\n"
        "    tool: payments.refund\n"
        "    args: {amount: 900}\n"
        "    expect: {effect: allow, rules: [refund-auto-approved]}\n"
    )
    assert main(["policy", "test", str(POLICIES), "--tests", str(tests), "-v"]) == 1
    out = capsys.readouterr().out
    assert "PASS: right" in out
    assert f"FAIL: wrong ({tests}:7)" in out
    assert "embedded: expected effect allow, got deny [refund-over-limit]" in out
    assert out.strip().endswith("1 passed, 1 failed")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cases: [{name: x, agent: {id: a, tenant: t}, expect: {effect: maybe}}]", ":1: cases[0].expect: expect:"),
        (
            "cases:\n  - name: x\n    agent: {id: a}\n    expect: {effect: deny}\n",
            ":2: agent: expected a mapping with id",
        ),
        ("cases:\n  - name: x\n    agent: {id: a, tenant: t}\n    colour: red\n", ":4: cases[0].colour: unknown key"),
        (
            "cases:\n  - {name: x, agent: {id: a, tenant: t}, time: '2026-11-24T15:00', expect: {effect: deny}}\n",
            ":2: time: expected ISO 8601 with a zone",
        ),
        ("nothing: here\n", "a test file is a mapping with a 'cases' list"),
    ],
)
def test_malformed_test_files_exit_1_with_file_and_line(tmp_path, capsys, text, message):
    tests = tmp_path / "bad.yaml"
    tests.write_text(text)
    assert main(["policy", "test", str(POLICIES), "--tests", str(tests)]) == 1
    assert message in capsys.readouterr().err


def test_engines_that_disagree_fail_the_case():
    bundle = build_bundle(POLICIES)
    case = load_cases(STARTER_TESTS)[0]

    class Lying:
        policy_version = bundle.revision

        def evaluate(self, document):
            return Decision(Effect.ALLOW, (Reason("refund-auto-approved", "other words"),), bundle.revision)

    from extauthz.engine import create_engine

    result = check_case(case, {"embedded": create_engine(bundle), "liar": Lying()}, bundle)
    assert not result.passed
    assert result.problems[-1].startswith("engines disagree")


def test_a_policy_error_exits_1_with_file_and_line(tmp_path, capsys):
    directory = copy_policy_dir(tmp_path / "p", "policy_set: x\nrules:\n  - {id: r, tools: [nope], effect: deny}\n")
    assert main(["policy", "test", str(directory), "--tests", str(STARTER_TESTS)]) == 1
    assert re.search(r"p0\.yaml:3: rules\[0\]\.tools\[0\]: no tool in the catalogue", capsys.readouterr().err)


# --- lint ---------------------------------------------------------------------------------

LINTED = """\
policy_set: linted
calendars:
  weekends:
    timezone: UTC
    windows: [{days: [sat, sun], start: "10:00", end: "12:00"}]
tools:
  pay: {match: {host: pay.test, method: POST, path: /pay}}
  crm: {match: {host: crm.test, method: GET, path: /r}}
  ops: {match: {host: ops.test, method: POST, path: /ops}}
rules:
  - {id: pay-never, tools: [pay], effect: deny}
  - {id: pay-small, tools: [pay], when: [{arg: amount, lt: 10}], effect: allow}
  - {id: crm-range, tools: [crm], when: [{arg: amount, gt: 500}, {arg: amount, lt: 10}], effect: allow}
  - {id: crm-allow, tools: [crm], when: [{arg: k, eq: v}], effect: allow}
  - {id: crm-deny, tools: [crm], when: [{arg: k, eq: v}], effect: deny}
  - id: crm-redact
    tools: [crm]
    effect: sanitize
    redact: {fields: [ssn]}
  - {id: crm-quote, tools: [crm], when: [{arg: ssn, exists: true}], effect: deny, reason: "bad ssn {ssn}"}
  - {id: ops-eq, tools: [ops], when: [{arg: a, eq: 1}, {arg: a, ne: 1}], effect: allow}
  - {id: ops-gone, tools: [ops], when: [{arg: a, exists: false}, {arg: a, in: [1]}], effect: allow}
  - {id: ops-empty, tools: [ops], when: [{arg: a, in: []}], effect: deny}
  - {id: ops-ok, tools: [ops], when: [{arg: a, gte: 10}, {arg: a, lte: 10}], effect: allow}
"""


@pytest.fixture
def linted(tmp_path) -> Path:
    return copy_policy_dir(tmp_path / "lint", LINTED)


def test_lint_warnings_name_file_and_line(linted, capsys):
    assert main(["policy", "lint", str(linted)]) == 0
    out = capsys.readouterr().out.splitlines()
    path = linted / "p0.yaml"
    expected = [
        (3, "calendar: 'weekends' has no window on any weekday"),
        (12, "unreachable: rule 'pay-small' can never take effect: rule 'pay-never'"),
        (13, "unreachable: rule 'crm-range' never matches: arg amount: no number is > 500 and < 10"),
        (14, "overlap: rules 'crm-allow' (allow) and 'crm-deny' (deny"),
        (20, "redacted-in-reason: rule 'crm-quote' quotes {ssn}"),
        (21, "unreachable: rule 'ops-eq' never matches: arg a: 'eq: 1' and 'ne: 1'"),
        (22, "unreachable: rule 'ops-gone' never matches: arg a: 'exists: false'"),
        (23, "unreachable: rule 'ops-empty' never matches: arg a: 'in: []' never holds"),
    ]
    for line, message in expected:
        assert any(o.startswith(f"{path}:{line}: warning: {message}") for o in out), (line, message, out)
    assert len(out) == len(expected), out  # ops-ok (gte 10 and lte 10) is satisfiable


def test_lint_strict_fails_on_warnings(linted):
    assert main(["policy", "lint", str(linted), "--strict"]) == 1


def test_lint_errors_exit_1(tmp_path, capsys):
    directory = copy_policy_dir(tmp_path / "p", "policy_set: x\nrules:\n  - {id: r, tools: [nope], effect: deny}\n")
    assert main(["policy", "lint", str(directory)]) == 1
    out = capsys.readouterr().out
    assert f"{directory / 'p0.yaml'}:3: error: rules[0].tools[0]: no tool in the catalogue matches 'nope'" in out


def test_the_starter_policy_is_lint_clean(capsys):
    assert main(["policy", "lint", str(POLICIES), "--strict"]) == 0


# --- eval ---------------------------------------------------------------------------------


def test_eval_explains_which_condition_failed(capsys):
    code = main(
        [
            "policy", "eval", str(POLICIES), "--agent", "bot", "--tenant", "acme", "--scope", "crm.*",
            "--tool", "crm.get_record", "--args", '{"tenant_id": "globex", "record_id": "r"}',
            "--header", "x-aegis-purpose=support", "--time", "2026-11-24T15:00:00Z",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("decision: deny")
    assert "crm-cross-tenant: the record belongs to another tenant" in out
    assert "MATCH     crm-cross-tenant (deny): arg tenant_id ne agent.tenant" in out
    assert 'no match  crm-tenant-purpose (allow): arg tenant_id eq agent.tenant failed (tenant_id = "globex", ' in out
    assert "calendars: business_hours=open" in out


def test_eval_renders_reasons_and_obligations(capsys):
    args = ["--agent", "bot", "--tenant", "acme", "--scope", "payments.refund", "--tool", "payments.refund"]
    assert main(["policy", "eval", str(POLICIES), *args, "--args", '{"amount": 120}']) == 0
    out = capsys.readouterr().out
    assert "refund-needs-approval: refund of 120 needs a human approval" in out
    assert "approval: by support-leads within 3600s" in out
    assert "no match  refund-over-limit (deny): arg amount gt 500 failed (amount = 120)" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--args", "[1]"], "--args: expected a JSON object"), (["--header", "novalue"], "--header: expected k=v")],
)
def test_eval_argument_errors_exit_1(capsys, extra, message):
    assert main(["policy", "eval", str(POLICIES), "--agent", "a", "--tenant", "t", *extra]) == 1
    assert message in capsys.readouterr().err


# --- diff ---------------------------------------------------------------------------------


def test_diff_lists_the_cases_whose_outcome_changes(tmp_path, capsys):
    new = tmp_path / "new"
    shutil.copytree(POLICIES, new)
    policy = new / "support.yaml"
    policy.write_text(policy.read_text().replace("gt: 500}", "gt: 1000}").replace("lte: 500}", "lte: 1000}"))
    assert main(["policy", "diff", str(POLICIES), str(new), "--tests", str(STARTER_TESTS)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("policy_version ")
    assert "2 of " in out[1]
    assert out[2].split() == ["case", "old", "new"]
    assert any(
        "a refund of 900 is denied" in line and "deny [refund-over-limit]" in line and "approval_needed" in line
        for line in out
    )


def test_diff_of_identical_policies_changes_nothing(capsys):
    assert main(["policy", "diff", str(POLICIES), str(POLICIES)]) == 0
    assert "0 of " in capsys.readouterr().out
