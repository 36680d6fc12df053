"""The `codream` command line; the only place that reads files, environment and flags.

Configuration precedence: defaults < TOML file (--config) < CODREAM_* environment < flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codream.config import ConfigError, RunConfig, build, dotted, merge
from codream.toml_compat import tomllib

# Flags that map straight onto top-level config fields (None: not given, keep lower layers).
_SIMPLE_FLAGS = ("strategy", "dataset", "clients", "partition", "models", "seed", "rounds",
                 "warmup_epochs", "local_epochs", "device", "out")


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """CODREAM_DREAM__GLOBAL_STEPS=5 → {'dream': {'global_steps': '5'}} (double underscore nests)."""
    found = {
        key[len("CODREAM_") :].lower().replace("__", "."): value
        for key, value in environ.items()
        if key.startswith("CODREAM_")
    }
    return dotted(found)


def _parse_assignment(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. dream.global_steps=20")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def load_run_config(
    config_file: str | None, environ: Mapping[str, str], flags: Mapping[str, Any]
) -> RunConfig:
    data: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config: no such file {config_file}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"--config {config_file}: not valid TOML: {error}") from None
    data = merge(data, from_environment(environ))
    data = merge(data, dotted({k: v for k, v in flags.items() if v is not None}))
    return build(RunConfig, data)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with the run configuration")
    parser.add_argument("--strategy", help="codream | fedavg | independent | centralized")
    parser.add_argument("--dataset", help="digits | mnist | npz:PATH | torchvision:NAME")
    parser.add_argument("--clients", type=int, help="number of clients K")
    parser.add_argument("--partition", help="iid | dirichlet:ALPHA")
    parser.add_argument("--models", help="comma-separated model names, taken in turn by clients")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--warmup-epochs", dest="warmup_epochs", type=int)
    parser.add_argument("--local-epochs", dest="local_epochs", type=int)
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field by dotted name, e.g. dream.global_steps=20")


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = {name: getattr(args, name) for name in _SIMPLE_FLAGS}
    for assignment in args.set:
        key, value = _parse_assignment(assignment)
        flags[key] = value
    return flags


def _configure_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        class JsonFormatter(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                entry = {"time": self.formatTime(record), "level": record.levelname,
                         "logger": record.name, "pid": record.process, "message": record.getMessage()}
                if record.exc_info:
                    entry["exception"] = self.formatException(record.exc_info)
                return json.dumps(entry)

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from codream.simulation import simulate

    config = load_run_config(args.config, os.environ, _flags(args))
    run_dir = Path(config.out)
    total = config.rounds + (0 if config.strategy == "fedavg" else 1)
    bar = tqdm(total=total, desc=f"{config.strategy} rounds", unit="round",
               disable=args.no_progress)

    def on_round(metrics: dict[str, Any]) -> None:
        postfix = {"acc": f"{metrics['mean_client_accuracy']:.3f}"}
        if "server_accuracy" in metrics:
            postfix["server"] = f"{metrics['server_accuracy']:.3f}"
        bar.set_postfix(postfix)
        bar.update(1)

    result = simulate(config, run_dir, on_round=on_round)
    bar.close()
    print(summary_line(config.strategy, result.summary))
    print(f"run directory: {run_dir}")
    return 0


def summary_line(what: str, summary: Mapping[str, Any]) -> str:
    """The one line a finished run prints, the same for a simulation and a cluster."""
    line = f"{what}: final mean client accuracy {summary.get('final_mean_client_accuracy', float('nan')):.4f}"
    if "final_server_accuracy" in summary:
        line += f", server model (dreams only) {summary['final_server_accuracy']:.4f}"
    return line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codream", description=__doc__)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-json", action="store_true", help="structured JSON logs")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a whole federation in one process")
    _add_config_flags(sim)
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.set_defaults(func=_cmd_simulate)
    # Imported here: the service modules load grpc, which `simulate` does not need.
    from client_node.cli import add_node_command
    from coordinator.cli import add_cluster_command, add_coordinator_command
    from coordinator.dev_certificates import add_certs_command

    add_coordinator_command(commands, _add_config_flags)
    add_node_command(commands)
    add_cluster_command(commands, _add_config_flags)
    add_certs_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.log_json)
    try:
        return args.func(args)
    except ConfigError as error:
        print(f"codream: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
