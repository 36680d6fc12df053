"""`codream certs`: write a development PKI (a CA, the coordinator's and one per node) for mTLS,
and per node an Ed25519 identity key with the identities.toml roster for authenticated secagg."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codream.cli import dev_certificates
from codream.cli.parsing import Parser, add_command
from codream.config import ConfigError

PKI_SUFFIXES = (".pem", ".key", "identities.toml")
# generate_dev_pki's argument names as this command's flags, for its messages.
_FLAGS = {"node_ids": "--nodes", "hosts": "--hosts"}


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="directory to write the PEM files to")
    parser.add_argument("--nodes", type=_comma_list, required=True, metavar="IDS",
                        help="comma-separated node ids")
    parser.add_argument("--hosts", type=_comma_list, default=["localhost", "127.0.0.1"],
                        metavar="NAMES",
                        help="comma-separated DNS names / IP addresses of the coordinator "
                             "(default: localhost,127.0.0.1)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing PKI in --out whole (no old node certificate "
                             "survives)")


def write_pki(out: Path, nodes: Sequence[str], hosts: Sequence[str], force: bool
              ) -> dev_certificates.DevPki:
    """A new PKI in `out`; an existing one is refused unless `force`, which replaces it whole.
    ConfigError names the flag at fault."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    others = [name for name in existing if not name.endswith(PKI_SUFFIXES)]
    if existing and not others and not force:
        raise ConfigError(f"--out {out}: already holds a PKI ({len(existing)} files); add --force "
                          "to replace it whole, or choose another --out")
    if others:
        raise ConfigError(f"--out {out}: holds files that are not a PKI's ({', '.join(others[:3])}"
                          f"{', ...' if len(others) > 3 else ''}); choose an empty or new --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Written beside, then swapped in: a failure leaves the old PKI as it was.
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write there: {error.strerror or error}") from error
    try:
        pki = dev_certificates.generate_dev_pki(staging, nodes, hosts)
    except ValueError as error:
        shutil.rmtree(staging, ignore_errors=True)
        message = str(error)
        for name, flag in _FLAGS.items():
            if message.startswith(f"{name}:"):
                message = flag + message[len(name):]
        raise ConfigError(message) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    staging.rename(out)
    return _moved(pki, out)


def _moved(pki: dev_certificates.DevPki, out: Path) -> dev_certificates.DevPki:
    def there(path: Path) -> Path:
        return out / path.name

    return dev_certificates.DevPki(
        out, there(pki.ca_cert), there(pki.server_cert), there(pki.server_key),
        {node: there(path) for node, path in pki.node_certs.items()},
        {node: there(path) for node, path in pki.node_keys.items()},
        {node: there(path) for node, path in pki.identity_keys.items()}, there(pki.roster))


def run_certs(args: argparse.Namespace) -> int:
    pki = write_pki(args.out, args.nodes, args.hosts, args.force)
    print(f"wrote a development PKI for {len(pki.node_certs)} nodes to {pki.out_dir}, with Ed25519 "
          f"identity keys and {pki.roster.name} for authenticated secure aggregation (not for production)")
    return 0


def add_certs_command(commands: Any) -> argparse.ArgumentParser:
    """Register `certs` on a CLI's subcommands; its `func` returns the exit code."""
    parser = add_command(commands, "certs",
                         "generate a development CA and certificates (mTLS) and identity keys (secagg)")
    _add_arguments(parser)
    parser.set_defaults(func=run_certs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`codream certs` with its own parser: `argv` holds just its flags (--out, --nodes, --hosts)."""
    parser = Parser(prog="codream certs", description=dev_certificates.__doc__)
    _add_arguments(parser)
    try:
        return run_certs(parser.parse_args(argv))
    except ConfigError as error:
        print(f"codream certs: error: {error}", file=sys.stderr)
        return 2
