"""Names shared between components that never import each other.

The ext_authz answer writes dynamic metadata that three other readers depend on: Envoy's
access log (``%DYNAMIC_METADATA(envoy.filters.http.ext_authz:<key>)%`` in the generated
config), ext_proc (which receives the namespace through ``forwarding_namespaces``) and
operators' log tooling.  Envoy always files ext_authz metadata under this namespace,
whatever the filter is named.  Change a key here and every reader follows.
"""

from __future__ import annotations

EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
EXT_PROC_NAMESPACE = "envoy.filters.http.ext_proc"

# Keys written by Check into EXT_AUTHZ_NAMESPACE.
MD_DECISION = "decision"  # allow | deny | sanitize | approval_needed | error
MD_RULE = "rule"  # comma-separated rule ids that produced the decision
MD_POLICY_VERSION = "policy_version"
MD_DECISION_ID = "decision_id"
MD_APPROVAL_ID = "approval_id"
MD_AGENT_ID = "agent_id"
MD_TOOL = "tool"
MD_REDACT = "redact"  # JSON-encoded redaction obligations for ext_proc
MD_SHADOW = "shadow"  # shadow outcomes that would change the answer: "would_deny:rule,…"
# JSON list of cost budgets (counter key, window end, per-token prices) ext_proc adds the
# response's token usage to (extauthz/limits/enforce.py UsageCharge).  Not in the access log.
MD_USAGE = "usage_budgets"
# Which ext_proc filter instance processes this call's bodies (one of BODY_PHASES); absent on
# calls with nothing to redact or meter and on every denial, so Envoy opens no ext_proc stream.
# Dynamic metadata, not a header: the agent cannot set it.
MD_BODY_PHASES = "body_phases"
# Every message Envoy can send for both bodies: request headers, request body, response
# headers, response body.  The request headers message is what lets the answer to the body
# set the redacted body's content-length; the response headers message holds the response
# back (a refusal can still be a 413/502 with a reason, not a reset) and switches an event
# stream to STREAMED.  Rule obligations apply to both bodies.
PHASES_BOTH_BODIES = "request_and_response"
# The response only (response headers, response body): a call without a request body,
# default response detectors, token usage to meter.  A CRM read is 2 messages, not 3.
PHASES_RESPONSE = "response"
BODY_PHASES = (PHASES_BOTH_BODIES, PHASES_RESPONSE)
# Check has the whole request body already (with_request_body), so on PHASES_BOTH_BODIES it
# redacts it itself and hands the outcome over: Envoy's Lua filter puts the new body in place
# (GRPC_ENVOY_FEATURES below; PHASES_RESPONSE then, 2 messages for a Slack post, not 4), or,
# behind an older bootstrap, the answer to the request headers message carries it
# (CONTINUE_AND_REPLACE) and Envoy sends no request body message (3 messages).
# MD_REQUEST_REDACTED: the counts found, "EMAIL:1,PHONE:2" ("" for none); its presence means
# Check redacted the request.
# MD_REQUEST_BODY: the redacted body (UTF-8), present only when it differs from the agent's.
# Absent (a body over the size limits, a refusal, an older Check), ext_proc redacts the
# request body message as before.
MD_REQUEST_REDACTED = "request_redacted"
MD_REQUEST_BODY = "request_body"
# The largest body handed so: the filter that puts it in place buffers this much, and
# Envoy forwards the ext_authz metadata with every ext_proc message (the filter drops the
# body from it once in place; behind an older bootstrap it stays for the whole stream).
MAX_REQUEST_BODY_HANDED = 64 * 1024
# When Envoy's bootstrap puts a handed body in place itself (a Lua filter after ext_proc,
# ``envoyconfig.filters.request_body_filter``), its ext_authz filter says so in the gRPC
# metadata of every Check: Check then names the response-only instance, and a Slack post
# costs 2 ext_proc messages, not 3.  A bootstrap without the filter (an older one) sends no
# such metadata and ext_proc puts the body in place, as before: the service never relies
# on a filter the running Envoy may not have.
GRPC_ENVOY_FEATURES = "x-aegis-envoy-features"
FEATURE_REQUEST_BODY_FILTER = "request-body-filter"

# The agent's trace context, for a stream that starts at the response (no request header
# message): Envoy sends these attributes (CEL expressions, keyed by the expression)
# with the first response message.  Only a fallback: Envoy's own span travels in the gRPC
# metadata when Envoy traces.
TRACE_HEADER_ATTRIBUTES = {
    "traceparent": "request.headers['traceparent']",
    "tracestate": "request.headers['tracestate']",
}

ACCESS_LOG_METADATA_KEYS = (
    MD_DECISION,
    MD_RULE,
    MD_POLICY_VERSION,
    MD_DECISION_ID,
    MD_APPROVAL_ID,
    MD_AGENT_ID,
    MD_TOOL,
    MD_SHADOW,
)

# Keys written by ext_proc into EXT_PROC_NAMESPACE (received via receiving_namespaces):
# redaction counts per detector type, e.g. "EMAIL:2,SSN:1" (types and counts, never values).
MD_REDACTIONS = "redactions"
# The bodies that were over dlp.max_body_bytes and went through unredacted because the policy
# allows it (redact.over_limit: pass): "request", "response" or "request,response".
MD_OVER_LIMIT = "over_limit"
# Access-log field of MD_OVER_LIMIT.
ACCESS_LOG_OVER_LIMIT = "dlp_over_limit"

# Headers.
HEADER_DECISION_ID = "x-aegis-decision-id"
HEADER_PURPOSE = "x-aegis-purpose"
HEADER_OVERRIDE = "x-aegis-override"
HEADER_PARENT_AGENT = "x-aegis-parent-agent"
