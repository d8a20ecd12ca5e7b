"""The ~2 KB support-ticket payload used for the latency benchmark (about 10 PII items)."""

from __future__ import annotations

import json
from typing import Any


def ticket(i: int = 0) -> dict[str, Any]:
    """A support ticket; ``i`` varies every PII value (for cold-cache runs) but not the shape."""
    n = 1000 + i
    return {
        "ticket_id": f"TCK-2024-{n:06d}",
        "created_at": "2024-03-18T09:41:27Z",
        "status": "open",
        "priority": 2,
        "channel": "email",
        "customer": {
            "id": 88231 + i,
            "full_name": f"Jane Q. Roe{i}",
            "email": f"jane.roe{i}@example.com",
            "phone": f"+1 415-555-{n % 10000:04d}",
            "date_of_birth": f"19{60 + i % 40}-0{1 + i % 9}-1{i % 10}",
            "address": {"street": f"{n} Market Street, Apt 4", "city": "San Francisco", "zip": "94103"},
            "tier": "gold",
        },
        "order": {
            "order_id": f"ORD-{n}-88412",
            "sku": "123-45-6789",
            "total": 129.99,
            "currency": "USD",
            "tracking_number": "1Z999AA10123456784",
            "version": "1.2.3.4",
        },
        "subject": "Refund for double charge on my card",
        "messages": [
            {
                "from": "customer",
                "at": "2024-03-18T09:41:27Z",
                "body": (
                    "Hi, I was charged twice for order ORD-1000-88412. The card was Visa 4111 1111 1111 1111 "
                    f"and my SSN is 219-{10 + i % 80}-{1000 + i % 8999} if you need to verify. You can also "
                    "wire the refund to DE89 3704 0044 0532 0130 00. I logged in from 203.0.113.42 yesterday. "
                    "Thanks, Jane"
                ),
            },
            {
                "from": "agent",
                "at": "2024-03-18T10:02:11Z",
                "body": (
                    "Thanks Jane. I can see both charges of $129.99 on 2024-03-17. Our reference is "
                    "REF-7781-2231 and the shipment tracking number is 1Z999AA10123456784. The refund "
                    "will take 5-7 business days. Please do not share your password; our API uses "
                    f"api_key=sk_live_{'a1B2c3D4e5F6g7H8' if i % 2 else 'Zz9Yy8Xx7Ww6Vv5U'}u4T3 internally."
                ),
            },
        ],
        "tags": ["billing", "refund", "duplicate-charge"],
        "metadata": {
            "client": "web",
            "app_version": "5.12.0.3",
            "request_uuid": "3f2a9c1b-7d4e-4b8a-9c1d-2e3f4a5b6c7d",
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "epoch": 1710754887,
        },
    }


def ticket_bytes(i: int = 0) -> bytes:
    """The ticket as indented JSON bytes (about 2 KB)."""
    return json.dumps(ticket(i), indent=1).encode()
