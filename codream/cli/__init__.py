"""The `codream` command line; the only place that reads files, environment and flags.

Configuration precedence: defaults < TOML file (--config) < CODREAM_* environment < flags.
A user's mistake is one line naming the flag, field or variable and exit status 2;
--debug adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata

from codream.cli.certs_command import add_certs_command
from codream.cli.cluster_command import add_cluster_command
from codream.cli.compare_command import add_compare_command
from codream.cli.coordinator_command import add_coordinator_command
from codream.cli.distill_command import add_distill_command
from codream.cli.evaluate_command import add_evaluate_command
from codream.cli.logging_setup import configure_logging
from codream.cli.node_command import add_node_command
from codream.cli.parsing import Parser
from codream.cli.predict_command import add_predict_command
from codream.cli.report_command import add_report_command
from codream.cli.simulate_command import add_simulate_command
from codream.config import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXIT_USAGE = 2  # a user error: a flag, field, variable or file that cannot be used


def package_version() -> str:
    """The installed distribution's version (pyproject's), or 'unknown' when run from a bare tree."""
    try:
        return metadata.version("codream")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="codream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="least severe log records shown")
    parser.add_argument("--log-json", action="store_true", help="structured JSON logs, one a line")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error, not only its one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_simulate_command(commands)
    add_compare_command(commands)
    add_coordinator_command(commands)
    add_node_command(commands)
    add_cluster_command(commands)
    add_certs_command(commands)
    add_evaluate_command(commands)
    add_predict_command(commands)
    add_distill_command(commands)
    add_report_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_json)
    try:
        return args.func(args)
    except ConfigError as error:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(error).split())  # one line, whatever the cause's text held
        print(f"codream {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
