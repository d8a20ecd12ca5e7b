"""``aegis``: the one command for everything a user does.

aegis serve -c aegis.yaml              the service alone (Envoy managed elsewhere)
aegis up -c aegis.yaml                 Envoy + service (+ demo tools) supervised together
aegis demo -c aegis.yaml               start the stack and play the support scenario
aegis envoy-config -c aegis.yaml       render the Envoy bootstrap
aegis token keygen|mint -c aegis.yaml  development keys and agent tokens
aegis policy build|lint|test|eval|diff   policy as code (see extauthz/policy/commands.py)
aegis dlp scan|redact                  the DLP library on stdin/files
aegis approvals list|show|approve|deny -c aegis.yaml [ID] [--comment …] [--as NAME]
aegis audit verify FILE… --key PUB | keygen   the signed decision log (extauthz/audit/)
aegis logs tail --access A --decisions D       calls joined on decision_id (extauthz/operator/)
aegis report FILE… [--since 7d] [--html out]   decision split, would-deny rules, approvals
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from extauthz.config import AegisConfig, load_config
from extauthz.errors import AegisError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aegis", description="Runtime policy gateway for AI agents' tool calls.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", default="aegis.yaml", help="path to aegis.yaml")
        return p

    with_config(sub.add_parser("serve", help="run the Aegis service (gRPC ext_authz + HTTP API)"))
    up = with_config(sub.add_parser("up", help="run Envoy, the service and (demo config) the demo tools"))
    up.add_argument(
        "--replicas", type=int, default=1, help="service processes behind Envoy (N > 1 needs store: redis://…)"
    )
    demo = with_config(sub.add_parser("demo", help="start the stack and play the support scenario"))
    demo.add_argument("--keep-running", action="store_true", help="keep the stack up after the scenario")
    demo.add_argument("--no-start", action="store_true", help="play against an already running stack")
    demo.add_argument("--log-dir", default=".aegis/logs", help="where the stack's logs go during the demo")
    envoy = with_config(sub.add_parser("envoy-config", help="render the Envoy bootstrap for this config"))
    envoy.add_argument("-o", "--output", help="write to this file instead of stdout")

    token = sub.add_parser("token", help="development keys and agent tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    with_config(token.add_parser("keygen", help="create the dev signing key pair named in the config"))
    mint = with_config(token.add_parser("mint", help="mint an agent token with the dev key"))
    mint.add_argument("--agent", required=True)
    mint.add_argument("--tenant", required=True)
    mint.add_argument("--scope", action="append", default=[], help="tool or tool glob (repeatable)")
    mint.add_argument("--ttl", type=int, default=300, help="lifetime in seconds")
    mint.add_argument("--act", action="append", default=[], help="delegating parent agent, nearest first (repeatable)")

    from extauthz.policy.commands import add_policy_parser

    add_policy_parser(sub)

    from extauthz.approvals.cli import add_parser as add_approvals_parser

    add_approvals_parser(sub, with_config)

    from extauthz.audit.commands import add_parser as add_audit_parser
    from extauthz.operator.commands import add_parsers as add_operator_parsers

    add_audit_parser(sub)
    add_operator_parsers(sub)

    dlp_cmd = sub.add_parser("dlp", help="detect and redact PII (see 'aegis dlp -h')", add_help=False)
    dlp_cmd.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "dlp":
        from dlp.cli import main as dlp_main

        return int(dlp_main(args.args))
    if args.command == "policy":
        from extauthz.policy.commands import run_policy

        return run_policy(args)
    if args.command == "audit":
        from extauthz.audit.commands import run as run_audit

        return run_audit(args)
    if args.command in {"logs", "report"}:
        from extauthz.operator.commands import run as run_operator

        return run_operator(args)
    config_path = Path(args.config)
    config = load_config(config_path)
    if args.command == "serve":
        from extauthz.server import configure_logging, serve

        configure_logging()
        return serve(config)
    if args.command == "envoy-config":
        from extauthz.envoyconfig import envoy_config_command

        return envoy_config_command(str(config_path), args.output)
    if args.command == "token":
        return _token(args, config)
    if args.command == "approvals":
        from extauthz.approvals.cli import run as run_approvals

        return run_approvals(args, config)
    if args.command in {"up", "demo"}:
        return _up_or_demo(args, config, config_path)
    raise AegisError(f"unknown command {args.command}")


def _token(args: argparse.Namespace, config: AegisConfig) -> int:
    from extauthz.devtokens import ensure_dev_keypair, mint_token

    if args.token_cmd == "keygen":  # noqa: S105 - a subcommand name
        created = ensure_dev_keypair(config.identity)
        state = "created" if created else "already exists"
        print(f"dev signing key {config.identity.dev_signing_key} {state}", file=sys.stderr)
        return 0
    print(
        mint_token(
            config.identity, agent=args.agent, tenant=args.tenant, scopes=args.scope, ttl_s=args.ttl, act=args.act
        )
    )
    return 0


def _up_or_demo(args: argparse.Namespace, config: AegisConfig, config_path: Path) -> int:
    from extauthz.demo import play
    from extauthz.supervisor import describe, run_until_signal, start_stack

    if args.command == "demo" and args.no_start:
        return play(config)
    log_dir = Path(args.log_dir) if args.command == "demo" else None
    replicas = getattr(args, "replicas", 1)
    stack = start_stack(config, config_path, log_dir=log_dir, replicas=replicas)
    print(describe(config, replicas), flush=True)
    if log_dir is not None:
        print(f"Logs: {log_dir}/aegis.log (decisions), {log_dir}/envoy.log (access log)", flush=True)
    if args.command == "up":
        return run_until_signal(stack)
    print("\nPlaying the support scenario through Envoy:\n", flush=True)
    try:
        code = play(config)
    except BaseException:
        stack.stop()
        raise
    if args.keep_running:
        print("\nThe stack keeps running; Ctrl-C stops it.", flush=True)
        return run_until_signal(stack) or code
    stack.stop()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aegis`` console script."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except AegisError as exc:
        print(f"aegis: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
