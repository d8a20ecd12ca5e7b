"""Every engine gives the same decision: native (compiled Python), regopy (rego-cpp) and
OPA (the real ``opa`` binary as a sidecar, through ``OpaEngine``).

Cases: an exhaustive grid over the starter policy, and property-based random policy sets
with random inputs (hypothesis).  Decisions are compared whole: effect, reasons (rule and
message), obligations and shadow results.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import POLICIES, copy_policy_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz.engine import create_engine
from extauthz.engine.native import LIBRARY_PATH, LIBRARY_SHA256, library_digest, supports
from extauthz.engine.opa import OpaEngine
from extauthz.identity import AgentIdentity
from extauthz.policy import build_bundle

ENGINE_KINDS = ("native", "regopy")
pytestmark = pytest.mark.opa


def engines_for(bundle, opa_url: str):
    engines = {kind: create_engine(bundle, kind) for kind in ENGINE_KINDS}
    engines["opa"] = OpaEngine(bundle, opa_url, timeout_s=5)
    return engines


def assert_agree(engines, document: dict[str, Any]) -> None:
    decisions = {kind: engine.evaluate(document) for kind, engine in engines.items()}
    reference = decisions["regopy"]
    for kind, decision in decisions.items():
        assert decision == reference, f"{kind} differs from regopy for {document}"


def document(
    tool, args, *, scopes=("*",), tenant="acme", headers=None, calendars=None, chain=(), labels=None, parent_scopes=None
):
    agent = AgentIdentity("a", tenant, tuple(scopes), tuple(chain), labels or {}, parent_scopes=parent_scopes)
    return {
        "agent": agent.to_input(),
        "tool": {"name": tool, "args": args},
        "request": {"method": "POST", "host": "h", "path": "/", "query": "", "headers": headers or {}},
        "context": {"purpose": None, "now": "", "calendars": calendars or {}},
        "override": None,
    }


def test_the_native_engine_mirrors_the_current_library():
    library = (POLICIES / LIBRARY_PATH).read_text()
    assert library_digest(library) == LIBRARY_SHA256, "decision.rego changed: update engine/native.py and its hash"
    assert supports(build_bundle(POLICIES))


def test_custom_rego_falls_back_to_regopy(tmp_path):
    directory = copy_policy_dir(
        tmp_path / "p", (POLICIES / "support.yaml").read_text(), rego={"x.rego": "package aegis.custom\n"}
    )
    bundle = build_bundle(directory)
    assert not supports(bundle)
    assert type(create_engine(bundle)).__name__ == "EmbeddedEngine"


@pytest.fixture(scope="module")
def support_engines(opa_support):
    engines = engines_for(build_bundle(POLICIES), opa_support.url)
    yield engines
    engines["opa"].close()


SCOPE_SETS = [("*",), ("crm.*",), ("payments.refund", "slack.post_message", "crm.*"), ()]


@pytest.mark.parametrize("scopes", SCOPE_SETS)
def test_support_policy_grid(scopes, support_engines):
    SUPPORT_ENGINES = support_engines
    amounts = [0, 20, 50, 50.01, 120, 500, 500.5, 900, -5, "10", True, None]
    for amount, open_ in itertools.product(amounts, (True, False)):
        args = {} if amount is None else {"amount": amount}
        assert_agree(
            SUPPORT_ENGINES, document("payments.refund", args, scopes=scopes, calendars={"business_hours": open_})
        )
    for channel, open_ in itertools.product(["#support", "#billing", "#random", "", 5, None], (True, False)):
        args = {"text": "x"} if channel is None else {"channel": channel, "text": "x"}
        assert_agree(
            SUPPORT_ENGINES, document("slack.post_message", args, scopes=scopes, calendars={"business_hours": open_})
        )
    for tenant_id, purpose in itertools.product(
        ["acme", "globex", None], ["support", "investigation", "marketing", None]
    ):
        args = {"record_id": "r"} if tenant_id is None else {"tenant_id": tenant_id, "record_id": "r"}
        headers = {} if purpose is None else {"x-aegis-purpose": purpose}
        assert_agree(SUPPORT_ENGINES, document("crm.get_record", args, scopes=scopes, headers=headers))
    for tool in (None, "nope.tool", "payments"):
        assert_agree(SUPPORT_ENGINES, document(tool, {}, scopes=scopes))


# --- random policy sets and inputs ---------------------------------------------------------

TOOLS = ["t.one", "t.two", "u.three"]
ARG_KEYS = ["a", "b", "tenant_id"]
VALUES = st.sampled_from([0, 1, 50, 50.5, 500, -1, "x", "acme", "#support", "", True, False])
NUMBERS = st.sampled_from([0, 1, 49.9, 50, 500, -1])
PATTERNS = st.sampled_from(["^#", "sup", "[0-9]+", "^acme$", "x|y"])
EFFECTS = st.sampled_from(["allow", "deny", "sanitize", "approval_needed"])


@st.composite
def conditions(draw):
    kind = draw(st.sampled_from(["arg", "header", "agent", "label", "calendar"]))
    if kind == "calendar":
        return {"calendar": "bh", "is": draw(st.booleans())}
    agent_keys = ["id", "tenant", "scopes", "chain", "parent", "root", "depth", "scopes_within_parent"]
    subject = {
        "arg": lambda: {"arg": draw(st.sampled_from(ARG_KEYS))},
        "header": lambda: {"header": draw(st.sampled_from(["x-aegis-purpose", "x-aegis-parent-agent", "x-b"]))},
        "agent": lambda: {"agent": draw(st.sampled_from(agent_keys))},
        "label": lambda: {"label": draw(st.sampled_from(["team", "tier"]))},
    }[kind]()
    ops = [
        "eq",
        "ne",
        "in",
        "not_in",
        "lt",
        "lte",
        "gt",
        "gte",
        "matches",
        "exists",
        "eq_ref",
        "contains",
        "not_contains",
    ]
    op = draw(st.sampled_from(ops))
    if op in {"contains", "not_contains"}:
        return {**subject, op: draw(st.sampled_from(["planner", "t.one", "t.*", "*", "x", 1]))}
    if op in {"lt", "lte", "gt", "gte"}:
        return {**subject, op: draw(NUMBERS)}
    if op in {"in", "not_in"}:
        return {**subject, op: draw(st.lists(VALUES, max_size=3))}
    if op == "matches":
        return {**subject, op: draw(PATTERNS)}
    if op == "exists":
        return {**subject, op: draw(st.booleans())}
    if op == "eq_ref":
        return {
            **subject,
            draw(st.sampled_from(["eq", "ne"])): {
                "ref": draw(st.sampled_from(["agent.tenant", "agent.parent", "arg.a", "header.x-b"]))
            },
        }
    return {**subject, op: draw(VALUES)}


@st.composite
def rules(draw, index):
    effect = draw(EFFECTS)
    rule: dict[str, Any] = {
        "id": f"r{index}",
        "tools": draw(st.lists(st.sampled_from([*TOOLS, "t.*"]), min_size=1, max_size=2, unique=True)),
        "when": draw(st.lists(conditions(), max_size=3)),
        "effect": effect,
        "reason": f"reason {index}",
    }
    if draw(st.booleans()) and draw(st.booleans()):
        rule["mode"] = "shadow"
    if effect == "sanitize":
        rule["redact"] = {"fields": draw(st.lists(st.sampled_from(["ssn", "dob"]), min_size=1, unique=True))}
        over_limit = draw(st.sampled_from([None, "pass", "block"]))
        if over_limit is not None:
            rule["redact"]["over_limit"] = over_limit
    if effect == "approval_needed":
        rule["approval"] = {
            "approvers": draw(st.sampled_from(["g1", "g2"])),
            "expires_in": draw(st.sampled_from(["5m", "1h"])),
        }
    return rule


@st.composite
def policy_sets(draw):
    count = draw(st.integers(min_value=0, max_value=6))
    return {
        "policy_set": "random",
        "default_effect": draw(st.sampled_from(["allow", "deny"])),
        "calendars": {"bh": {"timezone": "UTC", "windows": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]}},
        "tools": {t: {"match": {"host": "h", "method": "POST", "path": f"/{t}"}} for t in TOOLS},
        "rules": [draw(rules(i)) for i in range(count)],
    }


@st.composite
def inputs(draw):
    args = draw(st.dictionaries(st.sampled_from(ARG_KEYS), VALUES, max_size=3))
    headers = draw(
        st.dictionaries(
            st.sampled_from(["x-aegis-purpose", "x-aegis-parent-agent", "x-b"]),
            st.sampled_from(["support", "x", "#support", "acme", "planner"]),
            max_size=2,
        )
    )
    chain = draw(st.sampled_from([(), ("planner",), ("planner", "root-agent"), ("x", "y", "z")]))
    parent_scopes = draw(st.sampled_from([None, ("*",), ("t.*",), ("t.one",), ()]))
    labels = draw(
        st.dictionaries(st.sampled_from(["team", "tier"]), st.sampled_from(["support", "x", "1"]), max_size=2)
    )
    return document(
        draw(st.sampled_from([*TOOLS, "nope"])),
        args,
        scopes=draw(st.sampled_from([("*",), ("t.*",), ("t.one",), ()])),
        tenant=draw(st.sampled_from(["acme", "x"])),
        headers=headers,
        calendars={"bh": draw(st.booleans())},
        chain=chain,
        labels=labels,
        parent_scopes=parent_scopes,
    )


@settings(
    max_examples=int(__import__("os").environ.get("AEGIS_CONFORMANCE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policy=policy_sets(), docs=st.lists(inputs(), min_size=1, max_size=8))
def test_random_policies_and_inputs_agree(tmp_path_factory, opa_rest, policy, docs):
    directory = copy_policy_dir(Path(tmp_path_factory.mktemp("rand")), yaml.safe_dump(policy))
    bundle = build_bundle(directory)
    opa_rest.load(bundle)  # this example's bundle, its revision checked on every decision
    engines = engines_for(bundle, opa_rest.url)
    try:
        for doc in docs:
            assert_agree(engines, doc)
    finally:
        engines["opa"].close()


OVER_LIMIT_POLICY = """\
policy_set: over-limit
default_effect: allow
tools:
  t.one: {match: {host: h, method: POST, path: /t.one}}
rules:
  - id: a-pass
    tools: [t.one]
    when: [{arg: a, eq: 1}]
    effect: sanitize
    redact: {fields: [ssn], over_limit: pass}
  - id: b-block
    tools: [t.one]
    when: [{arg: b, eq: 1}]
    effect: sanitize
    redact: {detectors: [EMAIL]}
  - id: c-pass-shadow
    tools: [t.one]
    when: [{arg: c, eq: 1}]
    effect: sanitize
    mode: shadow
    redact: {fields: [dob], over_limit: pass}
  - id: d-pass
    tools: [t.one]
    when: [{arg: d, eq: 1}]
    effect: sanitize
    redact: {detectors: [SSN], over_limit: pass}
"""


@pytest.mark.parametrize(
    ("args", "over_limit"),
    [
        ({"a": 1}, "pass"),  # the only redacting rule passes
        ({"a": 1, "d": 1}, "pass"),  # every redacting rule passes
        ({"a": 1, "b": 1}, "block"),  # one redacting rule does not say pass: block wins
        ({"b": 1}, "block"),  # the default
        ({"c": 1}, "block"),  # a shadow rule's over_limit is not enforced (and it redacts nothing)
        ({"a": 1, "c": 1}, "pass"),
        ({}, "block"),  # nothing to redact
    ],
)
def test_over_limit_pass_needs_every_redacting_rule(tmp_path, opa_rest, args, over_limit):
    bundle = build_bundle(copy_policy_dir(tmp_path / "p", OVER_LIMIT_POLICY))
    opa_rest.load(bundle)
    engines = engines_for(bundle, opa_rest.url)
    try:
        doc = document("t.one", args)
        assert_agree(engines, doc)
        decision = engines["native"].evaluate(doc)
        assert decision.obligations.redact_over_limit == over_limit
        assert ("over_limit" in decision.obligations.redact_dict()) == (over_limit == "pass")
    finally:
        engines["opa"].close()


CUSTOM_DENY = """\
package aegis.custom

import rego.v1

# The documented extension point: denials at data.aegis.custom.deny.
deny contains {"rule": "refund-needs-customer", "message": "refunds name a customer"} if {
	input.tool.name == "payments.refund"
	not input.tool.args.customer_id
}
"""


def test_custom_rego_denials_join_the_decision_on_every_rego_engine(tmp_path, opa_rest):
    directory = copy_policy_dir(
        tmp_path / "p", (POLICIES / "support.yaml").read_text(), rego={"custom.rego": CUSTOM_DENY}
    )
    bundle = build_bundle(directory)
    assert not supports(bundle)
    opa_rest.load(bundle)
    engines = {"regopy": create_engine(bundle), "opa": OpaEngine(bundle, opa_rest.url, timeout_s=5)}
    try:
        denied = document("payments.refund", {"amount": 20})
        assert_agree(engines, denied)
        assert engines["regopy"].evaluate(denied).rules == ("refund-needs-customer",)
        allowed = document("payments.refund", {"amount": 20, "customer_id": "c-1"})
        assert_agree(engines, allowed)
        assert engines["opa"].evaluate(allowed).rules == ("refund-auto-approved",)
    finally:
        engines["opa"].close()
