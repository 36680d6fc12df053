"""`codream certs`: write a development PKI (a CA, the coordinator's and one per node) for mTLS."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codream.cli import dev_certificates


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory to write the PEM files to")
    parser.add_argument("--nodes", type=_comma_list, required=True, help="comma-separated node ids")
    parser.add_argument(
        "--hosts", type=_comma_list, default=["localhost", "127.0.0.1"],
        help="comma-separated DNS names / IP addresses of the coordinator (default: localhost,127.0.0.1)",
    )


def run_certs(args: argparse.Namespace) -> int:
    try:
        pki = dev_certificates.generate_dev_pki(args.out, args.nodes, args.hosts)
    except ValueError as error:
        print(f"codream certs: {error}", file=sys.stderr)
        return 2
    print(f"wrote a development PKI for {len(pki.node_certs)} nodes to {pki.out_dir} (not for production)")
    return 0


def add_certs_command(commands: Any) -> argparse.ArgumentParser:
    """Register `certs` on a CLI's subcommands; its `func` returns the exit code."""
    parser = commands.add_parser("certs", help="generate a development CA and certificates (mTLS)")
    _add_arguments(parser)
    parser.set_defaults(func=run_certs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`codream certs` with its own parser: `argv` holds just its flags (--out, --nodes, --hosts)."""
    parser = argparse.ArgumentParser(prog="codream certs", description=dev_certificates.__doc__)
    _add_arguments(parser)
    return run_certs(parser.parse_args(argv))
