"""`codream simulate`: a whole federation in one process, with a progress bar."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from codream.cli import preflight, run_directory
from codream.cli.parsing import add_command
from codream.cli.progress import progress_total, summary_line
from codream.cli.run_config import add_config_flags, config_flags, load_run_config
from codream.simulation import simulate


def run_simulate(args: argparse.Namespace) -> int:
    config = load_run_config(args.config, os.environ, config_flags(args), check=preflight.check_run)
    run_dir = Path(config.out)
    run_directory.check_new_run(run_dir, args.force)
    run_directory.clear(run_dir)
    run_directory.create(run_dir)
    bar = tqdm(total=progress_total(config), desc=f"{config.strategy} rounds", unit="round",
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
    if (run_dir / "models").is_dir():
        print(f"trained models: {run_dir / 'models'} (codream evaluate/predict MODEL, "
              f"codream.load_model(PATH) in Python)")
    return 0


def add_simulate_command(commands: Any) -> argparse.ArgumentParser:
    parser = add_command(commands, "simulate", "run a whole federation in one process")
    add_config_flags(parser)
    run_directory.add_force_flag(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_simulate)
    return parser
