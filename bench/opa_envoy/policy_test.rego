# Unit tests of policy.rego, run by tests/bench/test_opa_envoy_policy.py with `opa test`.
# The tokens are minted there with Aegis's own dev-token code and a fresh key
# (`data.bench_tokens`, `data.bench_identity`), so this file holds no key:
#   opa test bench/opa_envoy <dir with identity.json and tokens.json>
package aegis.opa_envoy_test

import data.aegis.opa_envoy

tokens := data.bench_tokens

refund(token, body) := {
	"attributes": {"request": {"http": {
		"method": "POST",
		"host": "payments.demo",
		"path": "/v1/refunds",
		"headers": {"authorization": concat(" ", ["Bearer", token]), "content-type": "application/json"},
	}}},
	"parsed_path": ["v1", "refunds"],
	"parsed_body": body,
}

crm(token, tenant, headers) := {
	"attributes": {"request": {"http": {
		"method": "GET",
		"host": "crm.demo",
		"path": concat("/", ["", "tenants", tenant, "records", "r-1"]),
		"headers": object.union({"authorization": concat(" ", ["Bearer", token])}, headers),
	}}},
	"parsed_path": ["tenants", tenant, "records", "r-1"],
	"parsed_body": null,
}

status(request) := code if {
	answer := opa_envoy.result with input as request
	code := object.get(answer, "http_status", 200)
}

rule(request) := name if {
	name := opa_envoy.decision.rule with input as request
}

support := {"x-aegis-purpose": "support"}

test_refund_thresholds if {
	status(refund(tokens.valid, {"amount": 20})) == 200
	status(refund(tokens.valid, {"amount": 50})) == 200
	status(refund(tokens.valid, {"amount": 50.01})) == 202
	status(refund(tokens.valid, {"amount": 500})) == 202
	status(refund(tokens.valid, {"amount": 500.01})) == 403
	rule(refund(tokens.valid, {"amount": 900})) == "refund-over-limit"
}

test_approval_answer_is_a_json_202 if {
	answer := opa_envoy.result with input as refund(tokens.valid, {"amount": 200})
	answer.allowed == false
	answer.headers["content-type"] == "application/json"
	json.unmarshal(answer.body) == {"status": "approval_needed", "rule": "refund-needs-approval"}
}

test_refund_amount_must_be_a_number if {
	status(refund(tokens.valid, {"amount": "20"})) == 400
	status(refund(tokens.valid, {"currency": "USD"})) == 400
	status(refund(tokens.valid, null)) == 400
}

test_crm_tenant_and_purpose if {
	status(crm(tokens.valid, "acme", support)) == 200
	status(crm(tokens.valid, "acme", {"x-aegis-purpose": "investigation"})) == 200
	rule(crm(tokens.valid, "globex", support)) == "crm-cross-tenant"
	rule(crm(tokens.other_tenant, "acme", support)) == "crm-cross-tenant"
	status(crm(tokens.other_tenant, "globex", support)) == 200
	rule(crm(tokens.valid, "acme", {})) == "crm-purpose-missing"
	rule(crm(tokens.valid, "acme", {"x-aegis-purpose": "marketing"})) == "crm-purpose-not-allowed"
}

test_tokens_that_aegis_refuses_are_refused if {
	every name in ["expired", "wrong_audience", "wrong_issuer", "other_key", "too_long", "no_tenant", "bad_typ"] {
		status(refund(tokens[name], {"amount": 20})) == 401
	}
	request := json.patch(refund(tokens.valid, {"amount": 20}), [{
		"op": "remove",
		"path": "/attributes/request/http/headers/authorization",
	}])
	status(request) == 401
	basic := json.patch(refund(tokens.valid, {"amount": 20}), [{
		"op": "replace",
		"path": "/attributes/request/http/headers/authorization",
		"value": concat(" ", ["Basic", tokens.valid]),
	}])
	status(basic) == 401
}

test_scopes_and_unknown_tools if {
	rule(crm(tokens.refund_only, "acme", support)) == "scope-missing"
	status(refund(tokens.refund_only, {"amount": 20})) == 200
	status(crm(tokens.wildcard, "acme", support)) == 200
	unknown := json.patch(refund(tokens.valid, {"amount": 20}), [{"op": "replace", "path": "/parsed_path", "value": ["v1", "charges"]}])
	rule(unknown) == "default-deny"
}
