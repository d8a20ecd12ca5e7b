"""The approval console under ``/console``: approver login, pending list, details, decide.

Sessions: a cookie holding ``{name, exp, csrf}`` signed with HMAC-SHA256 (HttpOnly,
SameSite=Strict, Path=/console, Secure behind https).  Approver tokens are checked against
their configured SHA-256 in constant time; plain tokens are never stored.  Every state
change is a POST carrying the session's CSRF token; cross-origin POSTs are refused;
``next`` only ever redirects to a relative ``/console`` path (no open redirects).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from extauthz.approvals import console_html as html
from extauthz.approvals.routes import agent_token_refusal
from extauthz.approvals.service import ApprovalActionError, ApprovalService
from extauthz.approvals.tokens import sha256_hex, sign, verify_signature
from extauthz.errors import AegisError
from extauthz.identity import TokenVerifier

SESSION_COOKIE = "aegis_console"
LOGIN_COOKIE = "aegis_console_login"
MAX_FORM_BYTES = 16 * 1024
RECENT = 20


@dataclass(frozen=True)
class Session:
    name: str
    email: str
    csrf: str


def safe_next(value: str | None) -> str:
    """A relative /console path, or the list page (``//evil``, ``https://…``, ``/\\evil`` refused)."""
    if not value or not value.startswith("/console") or value.startswith("//") or "\\" in value:
        return "/console/approvals"
    if any(c in value for c in "\r\n\t") or "://" in value.split("?", 1)[0]:
        return "/console/approvals"
    return value


def console_routes(service: ApprovalService, verifier: TokenVerifier) -> list[BaseRoute]:
    """The console's routes (mounted on the service's HTTP app)."""
    secret = service.secret
    approvers = service.config.console_approvers
    secure = service.base_url.startswith("https://")

    def respond(body: str, status: int = 200) -> HTMLResponse:
        headers = {
            "content-security-policy": html.CSP,
            "x-frame-options": "DENY",
            "cache-control": "no-store",
            "referrer-policy": "same-origin",  # Origin stays set on POSTs; links never leak off-site
            "x-content-type-options": "nosniff",
        }
        return HTMLResponse(body, status_code=status, headers=headers)

    def encode_session(session: Session) -> str:
        exp = int(time.time() + service.config.session_ttl_s)
        raw = json.dumps({"n": session.name, "m": session.email, "c": session.csrf, "e": exp}, separators=(",", ":"))
        data = base64.urlsafe_b64encode(raw.encode()).decode()
        return f"{data}.{sign(secret, 'session|' + data)}"

    def session_of(request: Request) -> Session | None:
        data, _, sig = (request.cookies.get(SESSION_COOKIE) or "").partition(".")
        if not data or not verify_signature(secret, "session|" + data, sig):
            return None
        try:
            raw = json.loads(base64.urlsafe_b64decode(data.encode()))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(raw, dict) or raw.get("n") not in approvers or int(raw.get("e", 0)) <= time.time():
            return None
        return Session(str(raw["n"]), str(raw.get("m", "")), str(raw["c"]))

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return {}
        try:
            parsed = parse_qs(body.decode("utf-8"), max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return {}
        return {k: v[0] for k, v in parsed.items()}

    def cross_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        return origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}"

    def login_redirect(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?next={quote(safe_next(target), safe='')}", status_code=303)

    Page = Callable[[Request, Session], Awaitable[Response]]

    def signed_in(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            refusal = agent_token_refusal(request, verifier)
            if refusal is not None:
                return refusal
            session = session_of(request)
            if session is None:
                return login_redirect(request)
            try:
                return await handler(request, session)
            except AegisError as exc:
                return respond(html.message_page("Unavailable", exc.message), 503)

        return guarded

    async def login_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        page = html.login_page(safe_next(request.query_params.get("next")), sign(secret, "login|" + nonce))
        response = respond(page)
        response.set_cookie(
            LOGIN_COOKIE, nonce, max_age=900, path="/console", httponly=True, samesite="strict", secure=secure
        )
        return response

    async def login(request: Request) -> Response:
        if agent_token_refusal(request, verifier) is not None or cross_origin(request):
            return respond(html.message_page("Refused", "this sign-in request is not allowed"), 403)
        fields = await form(request)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        next_path = safe_next(fields.get("next"))
        if not nonce or not verify_signature(secret, "login|" + nonce, fields.get("csrf", "")):
            return respond(html.message_page("Refused", "the sign-in form expired; reload the page"), 403)
        approver = approvers.get(fields.get("name", ""))
        presented = sha256_hex(fields.get("token", ""))
        # Compare against a dummy digest for unknown names too, so timing does not reveal names.
        expected = approver.token_sha256 if approver else sha256_hex(secrets.token_hex(16))
        if approver is None or not hmac.compare_digest(presented, expected):
            new_nonce = secrets.token_urlsafe(16)
            page = html.login_page(next_path, sign(secret, "login|" + new_nonce), "unknown approver or wrong token")
            response = respond(page, 401)
            response.set_cookie(
                LOGIN_COOKIE, new_nonce, max_age=900, path="/console", httponly=True, samesite="strict", secure=secure
            )
            return response
        session = Session(approver.name, approver.email, secrets.token_urlsafe(24))
        redirect = RedirectResponse(next_path, status_code=303)
        redirect.set_cookie(
            SESSION_COOKIE,
            encode_session(session),
            max_age=int(service.config.session_ttl_s),
            path="/console",
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        redirect.delete_cookie(LOGIN_COOKIE, path="/console")
        return redirect

    @signed_in
    async def logout(request: Request, session: Session) -> Response:
        fields = await form(request)
        if cross_origin(request) or not hmac.compare_digest(fields.get("csrf", ""), session.csrf):
            return respond(html.message_page("Refused", "invalid form token"), 403)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    async def index(request: Request) -> Response:
        return RedirectResponse("/console/approvals", status_code=303)

    @signed_in
    async def list_view(request: Request, session: Session) -> Response:
        everything = service.store.list_approvals()
        pending = [a for a in everything if a.state == "pending"]
        recent = sorted((a for a in everything if a.state != "pending"), key=lambda a: -(a.decided_at or a.expires_at))
        return respond(html.list_page(pending, recent[:RECENT], session.name, session.csrf))

    def detail(session: Session, approval_id: str, preselect: str = "", notice: str = "") -> Response:
        approval = service.store.get_approval(approval_id)
        if approval is None:
            return respond(html.message_page("Not found", "no such approval"), 404)
        may = service.is_approver(approval, [session.name, session.email])
        page = html.detail_page(
            approval, user=session.name, csrf=session.csrf, may_decide=may, preselect=preselect, notice=notice
        )
        return respond(page)

    @signed_in
    async def detail_view(request: Request, session: Session) -> Response:
        done = request.query_params.get("done", "")
        notice = f"Recorded: {done}." if done in {"approved", "denied"} else ""
        return detail(session, request.path_params["approval_id"], notice=notice)

    @signed_in
    async def decide(request: Request, session: Session) -> Response:
        fields = await form(request)
        if cross_origin(request) or not hmac.compare_digest(fields.get("csrf", ""), session.csrf):
            return respond(html.message_page("Refused", "invalid form token; reload the page"), 403)
        action = fields.get("action")
        if action not in {"approve", "deny"}:
            return respond(html.message_page("Refused", "choose approve or deny"), 400)
        approval_id = request.path_params["approval_id"]
        try:
            updated = service.decide(
                approval_id,
                approve=action == "approve",
                approver=session.name,
                identities=[session.name, session.email],
                comment=fields.get("comment"),
                via="console",
            )
        except ApprovalActionError as exc:
            return respond(html.message_page("Not recorded", exc.message), exc.status)
        return RedirectResponse(f"/console/approvals/{updated.id}?done={updated.state}", status_code=303)

    async def link(request: Request) -> Response:
        # A signed link (Teams card) only pre-selects the action; the approver must still sign in.
        q = request.query_params
        approval_id = request.path_params["approval_id"]
        action = q.get("action", "")
        if not service.links.verify(approval_id, action, q.get("exp", ""), q.get("sig", ""), time.time()):
            return respond(html.message_page("Link refused", "this approval link is invalid or has expired"), 403)
        session = session_of(request)
        if session is None:
            return login_redirect(request)
        return detail(session, approval_id, preselect=action)

    return [
        Route("/console", index, methods=["GET"]),
        Route("/console/login", login_form, methods=["GET"]),
        Route("/console/login", login, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Route("/console/approvals", list_view, methods=["GET"]),
        Route("/console/approvals/{approval_id}", detail_view, methods=["GET"]),
        Route("/console/approvals/{approval_id}", decide, methods=["POST"]),
        Route("/console/approvals/{approval_id}/link", link, methods=["GET"]),
    ]
