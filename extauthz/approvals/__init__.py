"""Human approvals: pending approval → notifiers → approver decision → single-use override token.

Modules, in the order an approval meets them:

    settings    the ``approvals`` section of aegis.yaml
    service     ApprovalService: record, decide, expire (sweep), status for the agent
    notify      the background dispatcher (bounded queue, retries, backoff) and its health
    slack / teams / webhook   the notifiers (and Slack's signed interactions)
    tokens      override tokens (EdDSA JWT) and HMAC-signed console links
    override    the Check step that verifies and consumes an override token
    routes / console / console_html   HTTP: agent status, operator API, Slack interactions, console
    audit       the ``aegis.audit`` event log
    factory     assembly from config (``build_approvals``, ``service_routes``), the approval budget
    cli         ``aegis approvals list|show|approve|deny``

This ``__init__`` imports nothing: ``extauthz.config`` imports ``settings`` at startup.
"""
