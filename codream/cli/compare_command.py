"""`codream compare`: several strategies on one configuration, in process, side by side.

The usual run flags, TOML file and CODREAM_* environment make one configuration; each name in
--strategies runs it as `codream simulate` would, into `<out>/<strategy>/`, and the comparison
(comparison.json, comparison.md, comparison.png, report.html) lands in `<out>` itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from codream.cli import preflight, run_directory
from codream.cli.parsing import add_command
from codream.cli.progress import progress_total
from codream.cli.run_config import add_config_flags, config_flags, load_run_config
from codream.comparison import COMPARISON_FILES, compare
from codream.comparison_table import COMPARISON_JSON, COMPARISON_MD, COMPARISON_PNG, markdown_table
from codream.config import ConfigError, RunConfig
from codream.strategies import STRATEGIES

DEFAULT_STRATEGIES = "codream,fedavg,independent"
# what --out may already hold from an earlier comparison, or from a run that was written there
OUT_ENTRIES = tuple(dict.fromkeys((*COMPARISON_FILES, *run_directory.RUN_ENTRIES)))
FLAG_NAMES = {"strategy": "--strategies"}


def parse_strategies(text: str) -> list[str]:
    """`codream,fedavg` → ['codream', 'fedavg']; a ConfigError names --strategies and the
    registered names for an unknown, repeated or missing one."""
    allowed = ", ".join(STRATEGIES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--strategies: name at least one strategy; allowed: {allowed}")
    for name in names:
        if name not in STRATEGIES:
            raise ConfigError(f"--strategies: unknown strategy {name!r}; allowed: {allowed}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--strategies: {', '.join(repeated)} named more than once")
    return names


def load_configs(args: argparse.Namespace, strategies: list[str]) -> tuple[Path, dict[str, RunConfig]]:
    """The comparison's directory and one checked config per strategy, differing only in
    `strategy` and `out`, all checked (preflight) before anything trains."""
    flags = config_flags(args)
    first = load_run_config(args.config, os.environ, {**flags, "strategy": strategies[0]},
                            flag_names=FLAG_NAMES)
    out = Path(first.out)
    configs = {}
    for strategy in strategies:
        try:
            configs[strategy] = load_run_config(
                args.config, os.environ, {**flags, "strategy": strategy, "out": str(out / strategy)},
                flag_names=FLAG_NAMES, check=preflight.check_run)
        except ConfigError as error:
            raise ConfigError(f"--strategies {strategy}: {error}") from error
    return out, configs


def run_compare(args: argparse.Namespace) -> int:
    strategies = parse_strategies(args.strategies)
    out, configs = load_configs(args, strategies)
    run_directory.check_new_run(out, args.force, OUT_ENTRIES)
    for config in configs.values():
        run_directory.check_new_run(Path(config.out), args.force)
    run_directory.clear(out, OUT_ENTRIES)
    run_directory.create(out)
    for config in configs.values():
        run_directory.clear(Path(config.out))
        run_directory.create(Path(config.out))
    bars: dict[str, Any] = {}

    def on_round(strategy: str, metrics: dict[str, Any]) -> None:
        if strategy not in bars:
            for bar in bars.values():
                bar.close()
            bars[strategy] = tqdm(total=progress_total(configs[strategy]), desc=f"{strategy} rounds",
                                  unit="round", disable=args.no_progress)
        bars[strategy].set_postfix({"acc": f"{metrics['mean_client_accuracy']:.3f}"})
        bars[strategy].update(1)

    rows = compare(configs, out, on_round=on_round)
    for bar in bars.values():
        bar.close()
    print(markdown_table(rows), end="")
    print(f"comparison: {out / COMPARISON_JSON}, {out / COMPARISON_MD}, {out / COMPARISON_PNG}, "
          f"{out / 'report.html'}")
    return 0


def add_compare_command(commands: Any) -> argparse.ArgumentParser:
    parser = add_command(commands, "compare", "run several strategies on one configuration and "
                         "compare them")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES, metavar="NAMES",
                        help=f"comma-separated strategies to run, each into --out/NAME/ "
                             f"({' | '.join(STRATEGIES)})")
    add_config_flags(parser, without=("strategy",))
    run_directory.add_force_flag(parser, "when --out or a strategy's sub-run holds an earlier run, "
                                         "delete the files runs write there (only those) first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_compare)
    return parser
