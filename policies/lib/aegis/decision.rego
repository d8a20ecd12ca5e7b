# Aegis generic policy library.
#
# Interprets the YAML rules, compiled into bundle data at data.aegis.policy, against the
# policy input (see docs/architecture.md for its keys).  Entry point: data.aegis.decision.
#
# Facts that need a clock or state (calendar membership, counters) arrive precomputed in
# input.context, so this library is pure and the embedded engine and OPA agree.
#
# Rules are indexed by tool at build time (data.aegis.policy.rules_by_tool) because
# rego-cpp evaluates every rule body on every query; only the called tool's rules run.
package aegis

import rego.v1

catalog := data.aegis.policy

tool_name := input.tool.name

known_tool if catalog.tools[tool_name]

tool_rules := catalog.rules_by_tool[tool_name] if known_tool

else := []

# --- condition subjects -------------------------------------------------------------

subject_value(s) := input.tool.args[s.key] if s.kind == "arg"

subject_value(s) := input.request.headers[s.key] if s.kind == "header"

subject_value(s) := input.agent[s.key] if s.kind == "agent"

subject_value(s) := input.context.calendars[s.key] if s.kind == "calendar"

subject_value(s) := input.agent.labels[s.key] if s.kind == "label"

operand(c) := subject_value(c.ref) if c.ref

operand(c) := c.value if not c.ref

has_subject(c) if {
	_ := subject_value(c.subject)
}

# --- condition operators ------------------------------------------------------------

holds(c) if {
	c.op == "exists"
	c.value == has_subject_bool(c)
}

has_subject_bool(c) := true if has_subject(c)

else := false

holds(c) if {
	c.op == "eq"
	subject_value(c.subject) == operand(c)
}

holds(c) if {
	c.op == "ne"
	v := subject_value(c.subject)
	v != operand(c)
}

holds(c) if {
	c.op == "in"
	v := subject_value(c.subject)
	some x in operand(c)
	x == v
}

holds(c) if {
	c.op == "not_in"
	v := subject_value(c.subject)
	every x in operand(c) {
		x != v
	}
}

holds(c) if {
	c.op == "contains"
	v := subject_value(c.subject)
	is_array(v)
	some x in v
	x == operand(c)
}

holds(c) if {
	c.op == "not_contains"
	v := subject_value(c.subject)
	is_array(v)
	every x in v {
		x != operand(c)
	}
}

holds(c) if {
	c.op == "lt"
	v := subject_value(c.subject)
	is_number(v)
	v < operand(c)
}

holds(c) if {
	c.op == "lte"
	v := subject_value(c.subject)
	is_number(v)
	v <= operand(c)
}

holds(c) if {
	c.op == "gt"
	v := subject_value(c.subject)
	is_number(v)
	v > operand(c)
}

holds(c) if {
	c.op == "gte"
	v := subject_value(c.subject)
	is_number(v)
	v >= operand(c)
}

holds(c) if {
	c.op == "matches"
	v := subject_value(c.subject)
	is_string(v)
	regex.match(operand(c), v)
}

# --- built-in rules -----------------------------------------------------------------

scope_grants(scope) if scope == "*"

scope_grants(scope) if scope == tool_name

scope_grants(scope) if {
	endswith(scope, ".*")
	startswith(tool_name, trim_suffix(scope, "*"))
}

scope_granted if {
	some scope in input.agent.scopes
	scope_grants(scope)
}

builtin_denials contains {"rule": "default-deny", "message": "unknown tool: no tool in the catalogue matches this call"} if {
	not known_tool
}

builtin_denials contains {"rule": "scope-missing", "message": sprintf("the token's scopes do not include %s", [tool_name])} if {
	known_tool
	not scope_granted
}

# --- extension point: custom Rego ----------------------------------------------------
#
# A custom module in the policy directory declares `package aegis.custom` and adds
# denials as a set of {"rule": id, "message": text} at data.aegis.custom.deny:
#
#     deny contains {"rule": "no-weekend-refunds", "message": "..."} if { ... }
#
# They join the built-in denials: the call is denied with those reasons.  Nothing else in
# this package is an interface; custom modules must not depend on its internal names.

custom_denials contains d if some d in data.aegis.custom.deny

denials := builtin_denials | custom_denials

# --- rule evaluation ----------------------------------------------------------------

matched contains r if {
	some r in tool_rules
	every c in r.when {
		holds(c)
	}
}

enforced contains r if {
	some r in matched
	r.mode == "enforce"
}

enforced_effects contains r.effect if some r in enforced

enforced_effects contains "deny" if count(denials) > 0

# deny > approval_needed > sanitize > allow; nothing matched → the tool's default effect.
effect := "deny" if "deny" in enforced_effects
else := "approval_needed" if "approval_needed" in enforced_effects
else := "sanitize" if "sanitize" in enforced_effects
else := "allow" if "allow" in enforced_effects
else := catalog.tools[tool_name].default_effect

default_applies if count(enforced_effects) == 0

reasons := [b | some b in denials] if count(denials) > 0

else := [{"rule": r.id, "message": r.reason} | some r in enforced; r.effect == effect] if not default_applies

else := [{"rule": sprintf("default-%s", [effect]), "message": sprintf("no rule matched; the default for %s is %s", [tool_name, effect])}]

# Redaction obligations hold whenever the call goes ahead (also after an approved retry).
redact_fields := sort({f | some r in enforced; some f in r.redact.fields})

redact_detectors := sort({d | some r in enforced; some d in r.redact.detectors})

# A body over the redaction size limit is refused (413) unless every enforced rule that asks
# for redaction says `over_limit: pass`: then it goes through unredacted (and is logged).
redacting contains r if {
	some r in enforced
	count(r.redact.fields) + count(r.redact.detectors) > 0
}

over_limit_passes if {
	count(redacting) > 0
	every r in redacting {
		r.redact.over_limit == "pass"
	}
}

redact := {"fields": redact_fields, "detectors": redact_detectors, "over_limit": "pass"} if over_limit_passes

else := {"fields": redact_fields, "detectors": redact_detectors}

# Several approval rules may match: the one with the smallest id names the approvers
# (a deterministic choice every engine makes the same way).
approval_rule_id := min({r.id | some r in enforced; r.effect == "approval_needed"})

approval := {"approvers": r.approval.approvers, "ttl_s": r.approval.ttl_s, "rule": r.id} if {
	effect == "approval_needed"
	some r in enforced
	r.id == approval_rule_id
}

else := null

shadow := [{"rule": r.id, "effect": r.effect, "message": r.reason} | some r in matched; r.mode == "shadow"]

decision := {
	"effect": effect,
	"reasons": reasons,
	"obligations": {
		"redact": redact,
		"approval": approval,
	},
	"shadow": shadow,
}
