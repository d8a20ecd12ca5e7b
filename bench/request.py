"""The one tool call every load generator sends: an allowed ``payments.refund``."""

from __future__ import annotations

import json
from dataclasses import dataclass

REFUND_PATH = "/v1/refunds"
ALLOWED_AMOUNT = 20.0  # support policy: refunds up to 50 are allowed
DENIED_AMOUNT = 900.0  # over 500: denied (403)


@dataclass(frozen=True)
class BenchRequest:
    """An HTTP/1.1 request (POST with a JSON body unless told otherwise), a Host header,
    optionally an agent token and extra headers."""

    host: str
    path: str
    body: str
    token: str | None = None
    method: str = "POST"
    extra_headers: tuple[tuple[str, str], ...] = ()

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Host": self.host}
        if self.body:
            headers["Content-Type"] = "application/json"
        headers.update(self.extra_headers)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def raw(self) -> bytes:
        """The request as sent on a keep-alive connection."""
        body = self.body.encode("utf-8")
        lines = [f"{self.method} {self.path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def refund_request(host: str, token: str | None, amount: float = ALLOWED_AMOUNT) -> BenchRequest:
    """The demo refund of ``amount`` (allowed by default)."""
    body = json.dumps({"amount": amount, "currency": "USD", "customer_id": "c-1"}, separators=(",", ":"))
    return BenchRequest(host=host, path=REFUND_PATH, body=body, token=token)
