"""``aegis logs tail`` and ``aegis report``: argument parsing (the work is in tail/report/html)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from extauthz.errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``aegis logs …`` and ``aegis report`` on the top-level parser."""
    logs = sub.add_parser("logs", help="read the access and decision logs").add_subparsers(
        dest="logs_cmd", required=True
    )
    tail = logs.add_parser("tail", help="one coloured line per call: access log joined with the decision log")
    tail.add_argument("--access", type=Path, help="Envoy's JSON access log")
    tail.add_argument("--decisions", type=Path, action="append", default=[], help="decision log (repeatable)")
    tail.add_argument("--agent", default="", help="only this agent")
    tail.add_argument("--decision", default="", help="only this outcome (allow, deny, sanitize, approval_needed…)")
    tail.add_argument("--tool", default="", help="only this tool")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new calls (needs --access)")
    report = sub.add_parser("report", help="decision split, shadow outcomes, rules, agents, tools, approvals")
    report.add_argument("files", nargs="+", type=Path, help="decision-log files")
    report.add_argument("--since", help="only entries this recent: 7d, 12h, 30m, 2w or an RFC 3339 time")
    report.add_argument("--access", type=Path, help="Envoy's access log (adds PII redaction counts)")
    report.add_argument("--html", type=Path, help="also write a self-contained HTML page here")


def run(args: argparse.Namespace) -> int:
    """Run ``aegis logs tail`` or ``aegis report``."""
    console = Console(highlight=False)
    if args.command == "logs":
        from extauthz.operator.tail import Filters, follow, tail

        filters = Filters(agent=args.agent, decision=args.decision, tool=args.tool)
        if not args.access and not args.decisions:
            raise ConfigError("logs tail: give --access and/or --decisions")
        if args.follow:
            if args.access is None:
                raise ConfigError("logs tail --follow: give --access (calls are followed as Envoy logs them)")
            follow(args.access, args.decisions[0] if args.decisions else None, filters, console)
            return 0
        tail(args.access, args.decisions, filters, console)
        return 0
    from extauthz.operator.html import render_html
    from extauthz.operator.readers import parse_since, read_access, read_entries
    from extauthz.operator.report import render_terminal, summarize

    try:
        since = parse_since(args.since, time.time()) if args.since else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    access = read_access(args.access) if args.access else ()
    report = summarize(read_entries(args.files), access, since)
    render_terminal(report, console)
    if args.html:
        args.html.write_text(render_html(report), encoding="utf-8")
        console.print(f"wrote {args.html}")
    return 0
