"""The upstream's answer for the redaction scenarios: a ~2 KB JSON support ticket with ~10 PII
items (SSN, e-mails, phone numbers, a card number, an IBAN, a date of birth, a full name)."""

from __future__ import annotations

import json
from typing import Any

SSN = "123-45-6789"


def ticket() -> dict[str, Any]:
    """A support ticket as a CRM or helpdesk API returns it."""
    return {
        "ticket_id": "TCK-2026-004211",
        "created_at": "2026-11-24T09:41:27Z",
        "status": "open",
        "priority": 2,
        "customer": {
            "id": "c-88231",
            "full_name": "Jane Q. Roe",
            "ssn": SSN,
            "dob": "1984-07-12",
            "email": "jane.roe@example.com",
            "phone": "+1 415-555-0142",
            "address": {"street": "1200 Market Street, Apt 4", "city": "San Francisco", "zip": "94103"},
            "tier": "gold",
        },
        "order": {"order_id": "ORD-1200-88412", "total": 129.99, "currency": "USD", "sku": "KB-ERGO-2"},
        "messages": [
            {
                "from": "customer",
                "at": "2026-11-24T09:41:27Z",
                "text": "Hi, I was charged twice for my keyboard order. My card is 4111 1111 1111 1111 and "
                "you can reach me at jane.roe@example.com or +1 415-555-0142 after 5pm.",
            },
            {
                "from": "agent",
                "at": "2026-11-24T10:02:11Z",
                "text": "Thanks Jane, I can see both charges. For the refund to your bank, please confirm the "
                "account DE89 3704 0044 0532 0130 00 is still current. I have copied billing@example.com.",
            },
            {
                "from": "customer",
                "at": "2026-11-24T10:15:40Z",
                "text": "Yes that IBAN is right. My husband John (john.roe@example.net, 415-555-0199) "
                "may call too. Order reference ORD-1200-88412, please don't close the ticket yet.",
            },
        ],
        "internal_notes": "Verified identity with SSN 123-45-6789 and date of birth on 2026-11-24. "
        "Escalated to billing; duplicate capture confirmed by the payment processor logs.",
        "tags": ["billing", "duplicate-charge", "refund-requested", "priority-customer", "keyboard"],
        "history": [
            {"at": "2026-11-24T09:41:30Z", "event": "created", "by": "email-intake", "queue": "billing-tier-2"},
            {"at": "2026-11-24T10:02:11Z", "event": "assigned", "by": "router", "queue": "billing-tier-2"},
            {"at": "2026-11-24T10:16:02Z", "event": "status_changed", "by": "agent-417", "from": "new", "to": "open"},
            {"at": "2026-11-24T10:16:09Z", "event": "escalated", "by": "agent-417", "queue": "payments-disputes"},
        ],
        "attachments": [
            {"name": "bank-statement-nov.pdf", "size": 182044, "scanned": True},
            {"name": "order-confirmation.png", "size": 90311, "scanned": True},
        ],
        "sla": {"first_response_minutes": 21, "resolution_due": "2026-11-26T17:00:00Z", "breached": False},
    }


def ticket_json() -> str:
    return json.dumps(ticket(), separators=(",", ":"))
