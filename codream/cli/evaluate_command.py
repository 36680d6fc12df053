"""`codream evaluate MODEL --dataset SPEC`: a trained model's accuracy and loss on a data set.

On the run's own data set and the test split it gives exactly the accuracy the run reported for
that model, so a model file can be checked after the fact; on another data set of the same shape
its images are first brought to the normalisation the model was trained with.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from codream.cli.model_files import (
    SPLITS,
    add_model_argument,
    describe,
    measure,
    open_dataset,
    open_model,
)
from codream.cli.parsing import add_command


def run_evaluate(args: argparse.Namespace) -> int:
    artifact = open_model(args.model, args.device)
    dataset = open_dataset(args.dataset)
    result = measure(artifact, dataset, args.split)
    if args.json:
        print(json.dumps({"model": str(args.model), **result, "info": artifact.info.as_dict()}, indent=2))
    else:
        correct = round(result["accuracy"] * result["samples"])
        print(f"{args.model}: {describe(artifact)} on {dataset.name} {args.split}: accuracy "
              f"{result['accuracy']:.4f} ({correct}/{result['samples']}), loss {result['loss']:.4f}")
    return 0


def add_evaluate_command(commands: Any) -> argparse.ArgumentParser:
    parser = add_command(commands, "evaluate", "a trained model's accuracy and loss on a data set")
    add_model_argument(parser)
    parser.add_argument("--dataset", required=True, metavar="SPEC",
                        help="digits | mnist | npz:PATH | torchvision:NAME[?root=DIR], as simulate's")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="which split of the data set to measure on")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_evaluate)
    return parser
