"""The `codream` command line; the only place that reads files, environment and flags.

Configuration precedence: defaults < TOML file (--config) < CODREAM_* environment < flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from codream.cli.certs_command import add_certs_command
from codream.cli.cluster_command import add_cluster_command
from codream.cli.coordinator_command import add_coordinator_command
from codream.cli.logging_setup import configure_logging
from codream.cli.node_command import add_node_command
from codream.cli.simulate_command import add_simulate_command
from codream.config import ConfigError


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codream", description=__doc__)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-json", action="store_true", help="structured JSON logs")
    commands = parser.add_subparsers(dest="command", required=True)
    add_simulate_command(commands)
    add_coordinator_command(commands)
    add_node_command(commands)
    add_cluster_command(commands)
    add_certs_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_json)
    try:
        return args.func(args)
    except ConfigError as error:
        print(f"codream: configuration error: {error}", file=sys.stderr)
        return 2
