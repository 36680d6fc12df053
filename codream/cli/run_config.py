"""The run configuration from its layers: defaults < TOML file (--config) < CODREAM_* environment < flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from codream.cli.config_sources import ConfigSources
from codream.cli.node_command import ENVIRONMENT as NODE_ENVIRONMENT
from codream.config import ConfigError, RunConfig, build, dotted, merge
from codream.toml_compat import tomllib

# Flags that map straight onto top-level config fields (None: not given, keep lower layers).
SIMPLE_FLAGS = ("strategy", "dataset", "clients", "partition", "models", "seed", "rounds",
                "warmup_epochs", "local_epochs", "device", "threads", "clients_per_round", "out")
PREFIX = "CODREAM_"
# CODREAM_* variables that belong to a process, not to the run: `codream node` reads its token
# from one, and a shell that exports it for the node must not break `simulate` or a coordinator.
NOT_RUN_CONFIG = frozenset(NODE_ENVIRONMENT)


def environment_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """{dotted field: variable name} of the CODREAM_* variables that are run configuration."""
    return {key[len(PREFIX):].lower().replace("__", "."): key
            for key in environ if key.startswith(PREFIX) and key not in NOT_RUN_CONFIG}


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """CODREAM_DREAM__GLOBAL_STEPS=5 → {'dream': {'global_steps': '5'}} (double underscore nests)."""
    return dotted({name: environ[key] for name, key in environment_variables(environ).items()})


def parse_assignment(text: str) -> tuple[str, Any]:
    """`--set KEY=VALUE` → (KEY, VALUE), both stripped."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. dream.global_steps=20")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def flag_for(name: str) -> str:
    """The flag that sets config field `name`: `--clients`, else `--set dream.global_steps`."""
    return "--" + name.replace("_", "-") if name in SIMPLE_FLAGS else f"--set {name}"


def load_run_config(
    config_file: str | None, environ: Mapping[str, str], flags: Mapping[str, Any], *,
    flag_names: Mapping[str, str] | None = None,
    check: Callable[[RunConfig], None] | None = None,
) -> RunConfig:
    """The validated config; `check` (e.g. preflight.check_run) may refuse it too. A ConfigError
    names the flag, CODREAM_* variable or --config line that set the field at fault;
    `flag_names` renames flags (the cluster's --nodes sets clients)."""
    data: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config: no such file {config_file}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"--config {config_file}: not valid TOML: {error}") from None
    given = {key: value for key, value in flags.items() if value is not None}
    sources = ConfigSources(
        config_file, data, environment_variables(environ),
        {key: (flag_names or {}).get(key, flag_for(key)) for key in given})
    merged = merge(merge(data, from_environment(environ)), dotted(given))
    try:
        config = build(RunConfig, merged)
        if check is not None:
            check(config)
    except ConfigError as error:
        raise sources.explain(error) from error
    return config


_METAVARS = {"strategy": "NAME", "dataset": "SPEC", "clients": "K", "partition": "SCHEME",
             "models": "NAMES", "seed": "N", "rounds": "N", "warmup_epochs": "EPOCHS",
             "local_epochs": "EPOCHS", "device": "DEVICE", "threads": "N",
             "clients_per_round": "N|FRACTION", "out": "DIR"}


def _default(name: str) -> str:
    value = getattr(RunConfig(), name)
    return ",".join(value) if isinstance(value, tuple) else str(value)


def add_config_flags(parser: argparse.ArgumentParser, without: Collection[str] = ()) -> None:
    """The run config's flags; each left out keeps what the file and environment say.
    `without`: fields the command sets itself (compare's --strategies sets `strategy`); their
    dests stay, as None, so `config_flags` reads the same namespace."""
    parser.set_defaults(**{name: None for name in without})

    def flag(name: str, text: str, **kwargs: Any) -> None:
        if name in without:
            return
        parser.add_argument(flag_for(name), dest=name, metavar=_METAVARS[name],
                            help=f"{text} (default: {_default(name)})", **kwargs)

    parser.add_argument("--config", metavar="FILE", help="TOML file with the run configuration (fields as in "
                        "config.toml of a run directory)")
    flag("strategy", "codream | fedavg | independent | centralized")
    flag("dataset", "digits | mnist | npz:PATH | torchvision:NAME[?root=DIR]")
    flag("clients", "number of clients K", type=int)
    flag("partition", "iid | dirichlet:ALPHA (ALPHA > 0; smaller is more label skew)")
    flag("models", "comma-separated model names, taken in turn by the clients")
    flag("seed", "seed of every random draw of the run", type=int)
    flag("rounds", "the last round (CoDream's warm-up is round 0, FedAvg starts at 1)", type=int)
    flag("warmup_epochs", "local epochs of round 0", type=int)
    flag("local_epochs", "local epochs per round", type=int)
    flag("device", "auto | cpu | cuda | cuda:N")
    flag("threads", "torch threads in every process of the run; part of the run: another count "
         "gives other bits", type=int)
    flag("clients_per_round", "nodes sampled per round: a count, a fraction in (0, 1), or 0 for "
         "every node (min_clients, sampling_reach: --set)", type=float)
    flag("out", "run directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field by dotted name, e.g. dream.global_steps=20 "
                             "(repeatable)")


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags of parsed `args` (see add_config_flags), as the top layer of load_run_config."""
    flags = {name: getattr(args, name) for name in SIMPLE_FLAGS}
    for assignment in args.set:
        key, value = parse_assignment(assignment)
        flags[key] = value
    return flags
