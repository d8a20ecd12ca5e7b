"""The OPA-Envoy benchmark's Rego policy (bench/opa_envoy/policy.rego) decides like Aegis.

* ``opa test`` runs the policy's own unit tests (bench/opa_envoy/policy_test.rego) with
  tokens minted here by Aegis's dev-token code and the matching public key as data.
* A grid of calls — the refund thresholds at and around 50 and 500, bad amounts, the CRM
  tenant and purpose checks, scopes, unknown tools, and every kind of bad token — goes
  through Aegis's ``Authorizer.check`` (in process, the repo's policies) and through the Rego
  policy (``opa eval``, the input shaped as opa-envoy-plugin shapes it); both must give the
  expected HTTP status.

Needs the real ``opa`` binary (.tools/bin/opa, scripts/install-opa.sh): skipped with the
reason without it, a failure under CI or with AEGIS_REQUIRE_OPA=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bench.inprocess import in_process
from bench.opa_envoy_stack import POLICY_DIR, POLICY_FILE, identity_data
from bench.stack import POLICIES, REPO, write_aegis_config
from extauthz.config import AegisConfig, load_config
from extauthz.devtokens import mint_token
from extauthz.tools import HttpRequest

pytestmark = pytest.mark.opa

SCOPES = ["payments.refund", "crm.get_record"]
BAD_TOKENS = ("expired", "wrong_audience", "wrong_issuer", "other_key", "too_long", "no_tenant", "bad_typ")


def opa_binary() -> str:
    """The real OPA, or skip (fail under CI / AEGIS_REQUIRE_OPA=1) with the reason."""
    local = REPO / ".tools" / "bin" / "opa"
    found = str(local) if local.exists() else shutil.which("opa")
    if found is None:
        reason = "the opa binary is missing (run scripts/install-opa.sh)"
        if os.environ.get("CI") or os.environ.get("AEGIS_REQUIRE_OPA") == "1":
            pytest.fail(f"{reason}; it is required here")
        pytest.skip(reason)
    return found


def mint_tokens(config: AegisConfig, other_key: AegisConfig) -> dict[str, str]:
    """Tokens Aegis accepts (by scope and tenant) and tokens it refuses, one per reason."""
    identity = config.identity

    def mint(**kwargs: Any) -> str:
        args: dict[str, Any] = {"agent": "bench-bot", "tenant": "acme", "scopes": SCOPES, "ttl_s": 600}
        args.update(kwargs)
        return mint_token(identity, **args)

    return {
        "valid": mint(),
        "other_tenant": mint(tenant="globex"),
        "refund_only": mint(scopes=["payments.refund"]),
        "wildcard": mint(scopes=["payments.*", "crm.*"]),
        "expired": mint(now=time.time() - 7200),
        "wrong_audience": mint(extra_claims={"aud": "someone-else"}),
        "wrong_issuer": mint(extra_claims={"iss": "https://issuer.elsewhere"}),
        "other_key": mint_token(other_key.identity, agent="bench-bot", tenant="acme", scopes=SCOPES, ttl_s=600),
        "too_long": mint(ttl_s=2 * identity.max_lifetime_s),
        "no_tenant": mint(extra_claims={"tenant": ""}),
        "bad_typ": mint(headers={"typ": "dpop+jwt"}),
    }


@dataclass(frozen=True)
class Case:
    """One HTTP call and the status Aegis's support policy gives it."""

    name: str
    method: str
    host: str
    path: str
    headers: dict[str, str]
    body: str
    expected: int

    def http_request(self) -> HttpRequest:
        parts = urlsplit(self.path)
        return HttpRequest(self.method, self.host, parts.path, parts.query, self.headers, self.body.encode())

    def plugin_input(self) -> dict[str, Any]:
        """The input opa-envoy-plugin builds (envoyauth/request.go): the CheckRequest as JSON,
        ``parsed_path`` / ``parsed_query``, and ``parsed_body`` for a JSON content type."""
        parts = urlsplit(self.path)
        json_body = "application/json" in self.headers.get("content-type", "") and self.body
        http = {"method": self.method, "host": self.host, "path": self.path, "headers": self.headers}
        return {
            "attributes": {"request": {"http": http}},
            "parsed_path": parts.path.lstrip("/").split("/"),
            "parsed_query": parse_qs(parts.query),
            "parsed_body": json.loads(self.body) if json_body else None,
            "truncated_body": False,
        }


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def refund(name: str, token: str, amount: Any, expected: int, *, body: str | None = None) -> Case:
    payload = body if body is not None else json.dumps({"amount": amount, "currency": "USD", "customer_id": "c-1"})
    headers = {**_auth(token), "content-type": "application/json"}
    return Case(name, "POST", "payments.demo", "/v1/refunds", headers, payload, expected)


def crm(name: str, token: str, tenant: str, purpose: str | None, expected: int) -> Case:
    headers = _auth(token) | ({"x-aegis-purpose": purpose} if purpose is not None else {})
    return Case(name, "GET", "crm.demo", f"/tenants/{tenant}/records/r-1", headers, "", expected)


def cases(tokens: dict[str, str]) -> list[Case]:
    ok = tokens["valid"]
    grid = [
        refund("refund 20: allow", ok, 20, 200),
        refund("refund 50: allow (limit included)", ok, 50, 200),
        refund("refund 50.01: approval", ok, 50.01, 202),
        refund("refund 500: approval (limit included)", ok, 500, 202),
        refund("refund 500.01: deny", ok, 500.01, 403),
        refund("refund 900: deny", ok, 900, 403),
        refund("refund amount as a string: 400", ok, "20", 400),
        refund("negative refund: 403", ok, -20, 403),
        refund("refund of zero: 403", ok, 0, 403),
        refund("refund without amount: 400", ok, None, 400, body='{"currency":"USD"}'),
        crm("CRM own tenant, support: allow", ok, "acme", "support", 200),
        crm("CRM own tenant, investigation: allow", ok, "acme", "investigation", 200),
        crm("CRM other tenant: deny", ok, "globex", "support", 403),
        crm("CRM without purpose: deny", ok, "acme", None, 403),
        crm("CRM purpose marketing: deny", ok, "acme", "marketing", 403),
        crm("CRM globex agent reading globex: allow", tokens["other_tenant"], "globex", "support", 200),
        crm("CRM without the crm scope: deny", tokens["refund_only"], "acme", "support", 403),
        crm("CRM with wildcard scopes: allow", tokens["wildcard"], "acme", "support", 200),
        Case("unknown tool on a known host: deny", "POST", "payments.demo", "/v1/charges", _auth(ok), "{}", 403),
        Case("refund without a token: 401", "POST", "payments.demo", "/v1/refunds", {}, '{"amount":20}', 401),
        Case(
            "Basic instead of Bearer: 401",
            "GET",
            "crm.demo",
            "/tenants/acme/records/r-1",
            {"authorization": f"Basic {ok}"},
            "",
            401,
        ),
    ]
    grid += [refund(f"refund with token {name}: 401", tokens[name], 20, 401) for name in BAD_TOKENS]
    return grid


@dataclass(frozen=True)
class Decided:
    cases: list[Case]
    aegis: dict[str, int]
    opa: dict[str, int]


def opa_statuses(opa: str, workdir: Path, config: AegisConfig, grid: list[Case]) -> dict[str, int]:
    """Every case through the Rego policy in one ``opa eval``: the status the plugin answers."""
    (workdir / "identity.json").write_text(json.dumps(identity_data(config)), encoding="utf-8")
    (workdir / "cases.json").write_text(json.dumps({"bench_cases": [c.plugin_input() for c in grid]}), encoding="utf-8")
    query = (
        "[s | some c in data.bench_cases; r := data.aegis.opa_envoy.result with input as c; "
        's := object.get(r, "http_status", 200)]'
    )
    argv = [opa, "eval", "--format", "json", "-d", str(POLICY_FILE)]
    argv += ["-d", str(workdir / "identity.json"), "-d", str(workdir / "cases.json"), query]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    statuses = json.loads(done.stdout)["result"][0]["expressions"][0]["value"]
    return {c.name: s for c, s in zip(grid, statuses, strict=True)}


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Decided]:
    opa = opa_binary()
    workdir = tmp_path_factory.mktemp("opa-envoy-policy")
    other = write_aegis_config(workdir / "other-key", "127.0.0.1:9")
    with in_process(workdir / "aegis", POLICIES) as proc:
        config = load_config(workdir / "aegis" / "aegis.yaml")
        grid = cases(mint_tokens(config, other))
        aegis = {c.name: proc.service.authorizer.check(c.http_request()).status for c in grid}
    yield Decided(grid, aegis, opa_statuses(opa, workdir, config, grid))


def test_the_grid_covers_every_outcome(decided: Decided) -> None:
    assert {c.expected for c in decided.cases} == {200, 202, 400, 401, 403}


def test_aegis_gives_the_expected_status(decided: Decided) -> None:
    wrong = {c.name: decided.aegis[c.name] for c in decided.cases if decided.aegis[c.name] != c.expected}
    assert not wrong, f"Aegis: {wrong}"


def test_rego_policy_decides_like_aegis(decided: Decided) -> None:
    wrong = {c.name: (decided.opa[c.name], c.expected) for c in decided.cases if decided.opa[c.name] != c.expected}
    assert not wrong, f"Rego policy (got, expected): {wrong}"


def test_opa_test_passes_the_policy_unit_tests(tmp_path: Path) -> None:
    opa = opa_binary()
    config = write_aegis_config(tmp_path / "aegis", "127.0.0.1:9")
    other = write_aegis_config(tmp_path / "other-key", "127.0.0.1:9")
    data = tmp_path / "data"
    data.mkdir()
    (data / "identity.json").write_text(json.dumps(identity_data(config)), encoding="utf-8")
    (data / "tokens.json").write_text(json.dumps({"bench_tokens": mint_tokens(config, other)}), encoding="utf-8")
    done = subprocess.run(
        [opa, "test", "--format", "json", str(POLICY_DIR), str(data)], capture_output=True, text=True, timeout=60
    )
    results = json.loads(done.stdout)
    names = {r["name"] for r in results}
    failed = [r["name"] for r in results if r.get("fail") or r.get("error")]
    assert done.returncode == 0 and not failed, f"opa test failed: {failed} {done.stderr[-2000:]}"
    declared = {
        ln.split()[0] for ln in (POLICY_DIR / "policy_test.rego").read_text().splitlines() if ln.startswith("test_")
    }
    assert names == declared and len(names) >= 6
