"""``aegis policy …``: build, lint, test, eval and diff policy directories.

    aegis policy build DIR -o bundle.tar.gz [--signing-key key.pem --key-id k]
    aegis policy lint DIR [--strict]
    aegis policy test DIR [--tests PATH] [--engine embedded|native|regopy|opa|both] [-v]
    aegis policy eval DIR --agent A --tenant T --scope S --tool TOOL --args '{...}' [--header k=v] [--time ISO]
    aegis policy diff OLD_DIR NEW_DIR [--tests PATH]

Every problem is printed as ``file:line: message`` and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from extauthz.engine import PolicyEngine, create_engine
from extauthz.errors import AegisError, PolicyError
from extauthz.policy.bundle import Bundle, build_bundle, write_bundle

TEST_ENGINES = ("embedded", "native", "regopy", "opa", "both")


def add_policy_parser(sub: Any) -> None:
    """Register ``aegis policy`` and its subcommands on the top-level subparsers."""
    policy = sub.add_parser("policy", help="policy as code").add_subparsers(dest="policy_cmd", required=True)
    build = policy.add_parser("build", help="compile a policy directory into an OPA bundle")
    build.add_argument("directory")
    build.add_argument("-o", "--output", default="bundle.tar.gz")
    build.add_argument("--signing-key", help="PEM private key (RSA or EC): write OPA's .signatures.json")
    build.add_argument("--key-id", default="default", help="key id named in the signature (OPA's default: default)")
    build.add_argument("--signing-alg", help="RS256, PS256, ES256… (default: from the key)")

    lint = policy.add_parser("lint", help="schema and semantic errors plus lint warnings")
    lint.add_argument("directory")
    lint.add_argument("--strict", action="store_true", help="warnings also fail (exit 1)")

    test = policy.add_parser("test", help="run YAML test cases against the policies")
    test.add_argument("directory")
    test.add_argument("--tests", help="test file or directory (default: DIR/tests)")
    test.add_argument("--engine", choices=TEST_ENGINES, default="embedded", help="both: embedded and OPA, must agree")
    test.add_argument("--opa-url", help="an OPA already serving this bundle (default: start a local opa)")
    test.add_argument("-v", "--verbose", action="store_true", help="also print passing cases")

    ev = policy.add_parser("eval", help="decide one call and explain which conditions held")
    ev.add_argument("directory")
    ev.add_argument("--agent", required=True)
    ev.add_argument("--tenant", required=True)
    ev.add_argument("--scope", action="append", default=[], help="tool or glob (repeatable)")
    ev.add_argument("--chain", action="append", default=[], help="delegating parent, nearest first (repeatable)")
    ev.add_argument("--tool", help="tool name (omit: a call no tool matches)")
    ev.add_argument("--args", default="{}", help="arguments as a JSON object")
    ev.add_argument("--header", action="append", default=[], help="request header k=v (repeatable)")
    ev.add_argument("--time", help="ISO 8601 instant (default: now); drives calendars")
    ev.add_argument("--engine", choices=TEST_ENGINES[:-1], default="embedded")
    ev.add_argument("--json", action="store_true", help="print the policy input and decision as JSON too")

    diff = policy.add_parser("diff", help="test cases whose outcome changes between two policy versions")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--tests", help="test file or directory (default: NEW/tests)")


def run_policy(args: argparse.Namespace) -> int:
    """Dispatch ``aegis policy <cmd>``; every AegisError is one message and exit 1."""
    commands = {"build": _build, "lint": _lint, "test": _test, "eval": _eval, "diff": _diff}
    try:
        return commands[args.policy_cmd](args)
    except AegisError as exc:
        print(f"aegis: {exc.message}", file=sys.stderr)
        return 1


def _build(args: argparse.Namespace) -> int:
    from extauthz.policy.signing import load_signing_key

    bundle = build_bundle(Path(args.directory))
    signing = load_signing_key(Path(args.signing_key), args.key_id, args.signing_alg) if args.signing_key else None
    write_bundle(bundle, Path(args.output), signing)
    signed = f", signed with key id {signing.key_id} ({signing.algorithm})" if signing else ""
    print(f"wrote {args.output} (policy_version {bundle.revision}{signed})")
    return 0


def _lint(args: argparse.Namespace) -> int:
    from extauthz.policy.lint import lint_dir

    findings = lint_dir(Path(args.directory))
    for finding in findings:
        print(finding)
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors or (args.strict and warnings) else 0


@contextmanager
def engines_for(bundle: Bundle, kind: str, opa_url: str | None = None) -> Iterator[dict[str, PolicyEngine]]:
    """The engines a ``--engine`` choice names (``both``: embedded and opa), started OPA included."""
    from extauthz.engine.opa import OpaEngine
    from extauthz.policy.opa_local import local_opa

    kinds = ("embedded", "opa") if kind == "both" else (kind,)
    with ExitStack() as stack:
        engines: dict[str, PolicyEngine] = {}
        for name in kinds:
            if name == "opa":
                url = opa_url or stack.enter_context(local_opa(bundle))
                engines[name] = stack.enter_context(OpaEngine(bundle, url, timeout_s=5))
            else:
                engines[name] = create_engine(bundle, name)
        yield engines


def _test(args: argparse.Namespace) -> int:
    from extauthz.policy.testing import load_cases, report, run_cases

    directory = Path(args.directory)
    bundle = build_bundle(directory)
    cases = load_cases(Path(args.tests) if args.tests else directory / "tests")
    if not cases:
        raise PolicyError(f"{args.tests or directory / 'tests'}: no test cases")
    with engines_for(bundle, args.engine, args.opa_url) as engines:
        results = run_cases(cases, engines, bundle)
    for line in report(results, verbose=args.verbose):
        print(line)
    return 0 if all(r.passed for r in results) else 1


def _eval(args: argparse.Namespace) -> int:
    from extauthz.identity import AgentIdentity
    from extauthz.policy.explain import explain
    from extauthz.policy.testing import CallSpec, parse_time

    bundle = build_bundle(Path(args.directory))
    try:
        call_args = json.loads(args.args)
    except ValueError as exc:
        raise PolicyError(f"--args: not valid JSON: {exc}") from None
    if not isinstance(call_args, dict):
        raise PolicyError("--args: expected a JSON object such as '{\"amount\": 120}'")
    call = CallSpec(
        agent=AgentIdentity(args.agent, args.tenant, tuple(args.scope), tuple(args.chain)),
        tool=args.tool,
        args=call_args,
        headers=_headers(args.header),
        time=parse_time(args.time, "--time") if args.time else None,
    )
    document = call.policy_input(bundle)
    with engines_for(bundle, args.engine) as engines:
        decision = engines[args.engine].evaluate(document)
    for line in explain(bundle, document, decision):
        print(line)
    if args.json:
        print(json.dumps({"input": document, "decision": _decision_json(decision)}, indent=2, default=str))
    return 0


def _headers(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PolicyError(f"--header: expected k=v, got {pair!r}")
        headers[key.strip().lower()] = value
    return headers


def _decision_json(decision: Any) -> Mapping[str, Any]:
    from dataclasses import asdict

    return asdict(decision)


def _diff(args: argparse.Namespace) -> int:
    from extauthz.policy.diff import changed_outcomes, diff_report
    from extauthz.policy.testing import load_cases

    old, new = build_bundle(Path(args.old)), build_bundle(Path(args.new))
    cases = load_cases(Path(args.tests) if args.tests else Path(args.new) / "tests")
    changes = changed_outcomes(cases, (old, create_engine(old)), (new, create_engine(new)))
    for line in diff_report(old, new, cases, changes):
        print(line)
    return 0
