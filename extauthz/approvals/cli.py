"""``aegis approvals list|show|approve|deny``: the operator's view, through the service's HTTP API.

The CLI authenticates with the operator token (``approvals.operator_token_env`` or
``approvals.operator_token_file``); ``--as NAME`` records the decision in an approver's
name (who must be in the approval's group).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from extauthz.approvals.factory import read_operator_token
from extauthz.config import AegisConfig
from extauthz.errors import AegisError

TIMEOUT_S = 10.0


class OperatorApiError(AegisError):
    """The operator API refused or could not be reached."""

    code = "operator_api_error"


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``approvals`` and its subcommands on the main parser."""
    approvals = sub.add_parser("approvals", help="list, show, approve or deny human approvals")
    cmds = approvals.add_subparsers(dest="approvals_cmd", required=True)
    listing = with_config(cmds.add_parser("list", help="approvals (pending by default)"))
    listing.add_argument("--state", default="pending", help="pending|approved|denied|expired|used|all")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = with_config(cmds.add_parser("show", help="one approval, arguments redacted"))
    show.add_argument("id")
    for name in ("approve", "deny"):
        act = with_config(cmds.add_parser(name, help=f"{name} a pending approval"))
        act.add_argument("id")
        act.add_argument("--comment", default=None)
        act.add_argument("--as", dest="as_name", default=None, help="record the decision as this approver")


class OperatorClient:
    """The operator HTTP API (``/v1/operator/approvals``)."""

    def __init__(self, config: AegisConfig, client: httpx.Client | None = None) -> None:
        token = read_operator_token(config.approvals)
        if not token:
            raise OperatorApiError(
                "no operator token: set approvals.operator_token_env (and export it) or approvals.operator_token_file"
            )
        self._client = client or httpx.Client(base_url=config.service.base_url, timeout=TIMEOUT_S)
        self._headers = {"authorization": f"Bearer {token}"}

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._client.request(method, f"/v1/operator/approvals{path}", headers=self._headers, **kw)
        except httpx.HTTPError as exc:
            raise OperatorApiError(f"the Aegis service is not reachable ({exc.__class__.__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": "bad_response", "message": response.text[:200]}
        if response.status_code != 200:
            raise OperatorApiError(f"{response.status_code} {body.get('error')}: {body.get('message')}")
        return body

    def close(self) -> None:
        self._client.close()

    def list(self, state: str | None) -> list[dict[str, Any]]:
        params = {"state": state} if state else {}
        return list(self._request("GET", "", params=params)["approvals"])

    def show(self, approval_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/{approval_id}"))

    def decide(self, approval_id: str, action: str, comment: str | None, as_name: str | None) -> dict[str, Any]:
        payload = {"comment": comment, "as": as_name}
        return dict(self._request("POST", f"/{approval_id}/{action}", json=payload))


def _line(a: Mapping[str, Any]) -> str:
    args = json.dumps(a["args"], sort_keys=True)
    return (
        f"{a['approval_id']}  {a['state']:<8}  {a['tool']:<20}  {a['agent_id']:<14}  {args}  expires {a['expires_at']}"
    )


def run(args: argparse.Namespace, config: AegisConfig, out: Callable[[str], None] = print) -> int:
    """Run one ``approvals`` subcommand; 0 on success."""
    client = OperatorClient(config)
    try:
        return _run(client, args, out)
    finally:
        client.close()


def _run(client: OperatorClient, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    if args.approvals_cmd == "list":
        items = client.list(None if args.state == "all" else args.state)
        if args.json:
            out(json.dumps(items, indent=2))
        elif not items:
            out(f"no {args.state} approvals")
        else:
            for item in items:
                out(_line(item))
        return 0
    if args.approvals_cmd == "show":
        out(json.dumps(client.show(args.id), indent=2))
        return 0
    result = client.decide(args.id, args.approvals_cmd, args.comment, args.as_name)
    out(f"{result['approval_id']}: {result['state']} by {result['decided_by']}")
    return 0
