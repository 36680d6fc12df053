"""The run configuration from its layers: defaults < TOML file (--config) < CODREAM_* environment < flags."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codream.config import ConfigError, RunConfig, build, dotted, merge
from codream.toml_compat import tomllib

# Flags that map straight onto top-level config fields (None: not given, keep lower layers).
SIMPLE_FLAGS = ("strategy", "dataset", "clients", "partition", "models", "seed", "rounds",
                "warmup_epochs", "local_epochs", "device", "out")


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """CODREAM_DREAM__GLOBAL_STEPS=5 → {'dream': {'global_steps': '5'}} (double underscore nests)."""
    found = {
        key[len("CODREAM_") :].lower().replace("__", "."): value
        for key, value in environ.items()
        if key.startswith("CODREAM_")
    }
    return dotted(found)


def parse_assignment(text: str) -> tuple[str, Any]:
    """`--set KEY=VALUE` → (KEY, VALUE), both stripped."""
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


def add_config_flags(parser: argparse.ArgumentParser) -> None:
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


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags of parsed `args` (see add_config_flags), as the top layer of load_run_config."""
    flags = {name: getattr(args, name) for name in SIMPLE_FLAGS}
    for assignment in args.set:
        key, value = parse_assignment(assignment)
        flags[key] = value
    return flags
