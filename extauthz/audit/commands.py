"""``aegis audit verify|keygen``: argument parsing and output for the decision-log tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from extauthz.audit.keys import generate, load_public
from extauthz.audit.verify import verify_files
from extauthz.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``aegis audit …`` on the top-level parser."""
    audit = sub.add_parser("audit", help="the signed decision log").add_subparsers(dest="audit_cmd", required=True)
    verify = audit.add_parser("verify", help="check the hash chain and signed checkpoints of decision-log files")
    verify.add_argument("files", nargs="+", type=Path, help="decision-log files (rotated files in any order)")
    verify.add_argument("--key", action="append", type=Path, default=[], help="Ed25519 public key PEM (repeatable)")
    verify.add_argument("--chain-only", action="store_true", help="check the hash chain without signatures")
    verify.add_argument(
        "--allow-unsigned-tail", action="store_true", help="accept entries after the last checkpoint (a live log)"
    )
    keygen = audit.add_parser("keygen", help="create the Ed25519 checkpoint-signing key pair")
    keygen.add_argument("-c", "--config", default="aegis.yaml", help="path to aegis.yaml (audit.signing_key)")
    keygen.add_argument("--out", type=Path, help="private key path (default: audit.signing_key of the config)")


def run(args: argparse.Namespace) -> int:
    """Run an ``aegis audit`` subcommand; exit 0 when all is well, 1 when verification fails."""
    if args.audit_cmd == "keygen":
        return _keygen(args)
    if not args.key and not args.chain_only:
        raise ConfigError("audit verify: give the public key(s) with --key (or --chain-only to skip signatures)")
    result = verify_files(args.files, [load_public(k) for k in args.key], allow_unsigned_tail=args.allow_unsigned_tail)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if not result.ok:
        print(f"FAILED at {result.first_problem}")
        return 1
    keys = ", ".join(result.key_ids) or "-"
    print(
        f"OK: {result.entries} entries in {result.files} file(s), {result.checkpoints} signed checkpoint(s) "
        f"(key ids: {keys}), head {result.head}"
    )
    return 0


def _keygen(args: argparse.Namespace) -> int:
    private: Path | None = args.out
    if private is None:
        from extauthz.config import load_config

        private = load_config(Path(args.config)).audit.signing_key
        if private is None:
            raise ConfigError(f"{args.config}: audit.signing_key is not set (or pass --out)")
    public, fingerprint = generate(private)
    print(f"created {private} (keep it secret) and {public} (give it to verifiers); fingerprint {fingerprint}")
    return 0
