# The support policy's refund and CRM rules (policies/support.yaml, the brief's Table 1) for
# OPA's Envoy plugin (opa-envoy-plugin), written the way an OPA-Envoy user would write them,
# for the side-by-side benchmark `python -m bench.opa_envoy`.
#
# Input: what opa-envoy-plugin builds from Envoy's CheckRequest (`input.attributes.request.http`,
# `input.parsed_path`, `input.parsed_body` from the body ext_authz sends with `with_request_body`).
# Data: `data.bench_identity` = {cert (PEM public key), alg, issuer, audience, max_lifetime_s,
# leeway_s},
# written by the harness next to the fresh dev key the Aegis service verifies with.
# Query: `data.aegis.opa_envoy.result`, an object the plugin turns into Envoy's answer:
# `allowed` (forward to the upstream) or a local reply with `http_status`, `headers`, `body`.
#
# What Aegis answers, and the equivalent here:
#   no / bad / expired token            401  (Aegis: 401 invalid_token)
#   call that matches no tool            403  default-deny
#   tool not granted by the token scopes 403  scope-missing
#   refund amount missing or not number  400  (Aegis: 400 missing_argument / invalid_argument)
#   refund <= 50                         allow          refund-auto-approved
#   refund > 50 and <= 500               202 + JSON     refund-needs-approval (Aegis also opens
#                                        an approval in its store and returns its id; OPA has no
#                                        store, so this is only the answer's shape)
#   refund > 500                         403  refund-over-limit
#   CRM read of another tenant           403  crm-cross-tenant
#   CRM read without / with a bad purpose 403 crm-purpose-missing / crm-purpose-not-allowed
#   CRM read, own tenant, good purpose   allow          crm-tenant-purpose (Aegis also redacts
#                                        ssn, dob, full_name in the response: no DLP here)
package aegis.opa_envoy

http := input.attributes.request.http

# --- identity: the bearer JWT, verified the way Aegis verifies it -----------------------------

bearer := token if {
	[scheme, token] := split(http.headers.authorization, " ")
	lower(scheme) == "bearer"
	token != ""
}

constraints := {
	"cert": data.bench_identity.cert,
	"alg": data.bench_identity.alg,
	"iss": data.bench_identity.issuer,
	"aud": data.bench_identity.audience,
}

accepted_typ := {"jwt", "at+jwt", "application/at+jwt"}

# Signature, alg, exp, nbf, iss and aud by io.jwt.decode_verify (no leeway: OPA has none);
# then what Aegis also requires: a JWT `typ` if any, a numeric iat not in the future (with
# Aegis's leeway), a bounded lifetime, non-empty sub and tenant.
claims := payload if {
	[valid, header, payload] := io.jwt.decode_verify(bearer, constraints)
	valid
	lower(object.get(header, "typ", "jwt")) in accepted_typ
	is_number(payload.iat)
	is_number(payload.exp)
	payload.iat - data.bench_identity.leeway_s <= time.now_ns() / 1000000000
	payload.exp - payload.iat <= data.bench_identity.max_lifetime_s
	is_string(payload.sub)
	payload.sub != ""
	is_string(payload.tenant)
	payload.tenant != ""
}

scopes := split(claims.scope, " ") if is_string(claims.scope)

scopes := claims.scope if is_array(claims.scope)

# A scope grants a tool by name, by `prefix.*`, or `*` (extauthz.identity.scope_grants).
scope_grants(granted, _) if granted == "*"

scope_grants(granted, wanted) if granted == wanted

scope_grants(granted, wanted) if {
	endswith(granted, ".*")
	startswith(wanted, trim_suffix(granted, "*"))
}

scope_granted if {
	some granted in scopes
	scope_grants(granted, tool)
}

# --- tools: the catalogue match of policies/support.yaml ------------------------------------

host := split(http.host, ":")[0]

tool := "payments.refund" if {
	host == "payments.demo"
	http.method == "POST"
	input.parsed_path == ["v1", "refunds"]
}

tool := "crm.get_record" if {
	host == "crm.demo"
	http.method == "GET"
	count(input.parsed_path) == 4
	input.parsed_path[0] == "tenants"
	input.parsed_path[1] != ""
	input.parsed_path[2] == "records"
	input.parsed_path[3] != ""
}

# --- rules --------------------------------------------------------------------------------

amount := input.parsed_body.amount

# A helper rule, not `not is_number(amount)`: OPA evaluates a call's reference arguments
# outside the negation, so with no amount that expression would be undefined, not true.
amount_is_number if is_number(amount)

refund := {"status": 400, "rule": "invalid_argument"} if {
	not amount_is_number
} else := {"status": 403, "rule": "refund-not-positive"} if {
	amount <= 0
} else := {"status": 200, "rule": "refund-auto-approved"} if {
	amount <= 50
} else := {"status": 202, "rule": "refund-needs-approval"} if {
	amount <= 500
} else := {"status": 403, "rule": "refund-over-limit"}

purposes := {"support", "investigation"}

purpose_allowed if http.headers["x-aegis-purpose"] in purposes

crm := {"status": 403, "rule": "crm-cross-tenant"} if {
	input.parsed_path[1] != claims.tenant
} else := {"status": 403, "rule": "crm-purpose-missing"} if {
	not http.headers["x-aegis-purpose"]
} else := {"status": 403, "rule": "crm-purpose-not-allowed"} if {
	not purpose_allowed
} else := {"status": 200, "rule": "crm-tenant-purpose"}

# Deny before approval before allow, as Aegis combines effects; the first that applies wins.
# Undefined (nothing applies) leaves `result` at its default: denied.
decision := {"status": 401, "rule": "invalid_token"} if {
	not claims
} else := {"status": 403, "rule": "default-deny"} if {
	not tool
} else := {"status": 403, "rule": "scope-missing"} if {
	not scope_granted
} else := refund if {
	tool == "payments.refund"
} else := crm if {
	tool == "crm.get_record"
}

# --- the answer ---------------------------------------------------------------------------

reply_body(d) := {"status": "approval_needed", "rule": d.rule} if d.status == 202

reply_body(d) := {"error": "invalid_token", "rule": d.rule} if d.status == 401

reply_body(d) := {"error": "invalid_argument", "rule": d.rule} if d.status == 400

reply_body(d) := {"error": "denied", "rule": d.rule} if d.status == 403

default result := {"allowed": false, "http_status": 403, "body": "{\"error\":\"denied\"}"}

result := {"allowed": true, "headers": {"x-aegis-rule": decision.rule}} if decision.status == 200

result := {
	"allowed": false,
	"http_status": decision.status,
	"headers": {"content-type": "application/json", "x-aegis-rule": decision.rule},
	"body": json.marshal(reply_body(decision)),
} if decision.status != 200
