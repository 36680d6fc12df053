"""`codream distill --dreams FILE --model NAME`: a fresh model of any architecture, trained on a
run's dreams only, written as a loadable model file.

The dreams file (RUN/dreams.npz) carries the federation's knowledge without any client's data:
this trains a new model on it exactly as the coordinator trains its server model
(`training.train_on_dreams`: T²·KL to the aggregated soft labels), so an organisation can get a
model of an architecture nobody in the run used. `--dataset` then measures it on real data.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from codream.cli import preflight
from codream.cli.model_files import measure, open_dataset
from codream.cli.parsing import add_command
from codream.config import ConfigError, RunConfig
from codream.dream_artifacts import DreamSet, load_dreams
from codream.model_artifacts import ModelInfo, load_model_artifact, save_model
from codream.models import build_seeded_model
from codream.training import OptimizerConfig, train_on_dreams

_SERVER = RunConfig().server_model  # the server model's recipe is the default
_TEMPERATURE = RunConfig().distill.temperature


def open_dreams(path: str) -> DreamSet:
    if not Path(path).is_file():
        raise ConfigError(f"--dreams {path}: no such file; a CoDream run writes RUN/dreams.npz")
    try:
        return load_dreams(path)
    except ValueError as error:
        raise ConfigError(f"--dreams {error}") from None


def fresh_model(name: str, dreams: DreamSet, seed: int) -> torch.nn.Module:
    """A new `name` model for the dreams' shape and classes; ConfigError naming --model."""
    try:
        model = build_seeded_model(name, dreams.input_shape, dreams.num_classes, seed)
    except ValueError as error:
        raise ConfigError(f"--model {name}: {error}") from None
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(dreams.images[:2].copy()))
    except Exception as error:  # noqa: BLE001 - whatever the model raises, say which model
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        shape = "x".join(str(d) for d in dreams.input_shape)
        raise ConfigError(f"--model {name}: cannot take the {shape} dreams ({cause}); choose "
                          "another model") from None
    if tuple(logits.shape[1:]) != (dreams.num_classes,):
        raise ConfigError(f"--model {name}: gives {tuple(logits.shape[1:])} outputs, not the "
                          f"{dreams.num_classes} classes of the dreams")
    return model


def run_distill(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise ConfigError(f"--steps: must be >= 1, got {args.steps}")
    if args.batch_size < 2:
        raise ConfigError(f"--batch-size: must be >= 2 (BatchNorm needs two samples), got "
                          f"{args.batch_size}")
    for flag, value in (("--lr", args.lr), ("--temperature", args.temperature)):
        if not value > 0:
            raise ConfigError(f"{flag}: must be > 0, got {value}")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"--out {out}: exists; choose another --out or add --force to replace it")
    device = preflight.check_device(args.device, "--device")
    dreams = open_dreams(args.dreams)
    dataset = open_dataset(args.dataset) if args.dataset else None  # a mistake found before training
    if dataset is not None and dataset.input_shape != dreams.input_shape:
        shape = "x".join(str(d) for d in dataset.input_shape)
        raise ConfigError(f"--dataset {args.dataset}: its images are {shape} but the dreams are "
                          f"{'x'.join(str(d) for d in dreams.input_shape)}; measure on the data set "
                          f"the run dreamt on ({dreams.dataset})")
    model = fresh_model(args.model, dreams, args.seed).to(device)
    images, logits = dreams.tensors()
    recipe = OptimizerConfig(args.lr, 0.9, 5e-4, args.batch_size)
    loss = train_on_dreams(model, images.to(device), logits.to(device), args.steps, recipe,
                           args.temperature, torch.Generator().manual_seed(args.seed))
    info = ModelInfo(model=args.model, input_shape=dreams.input_shape, num_classes=dreams.num_classes,
                     channel_mean=dreams.channel_mean, channel_std=dreams.channel_std, role="distilled",
                     node_id="distill", strategy="", round=dreams.round, dataset=dreams.dataset)
    save_model(out, model, info)
    print(f"distilled {args.model} on {len(images)} dreams for {args.steps} steps (last loss "
          f"{loss:.4f}); wrote {out}")
    if dataset is not None:
        result = measure(load_model_artifact(out, device), dataset)
        print(f"{out} on {dataset.name} test: accuracy {result['accuracy']:.4f}, loss "
              f"{result['loss']:.4f}")
    return 0


def add_distill_command(commands: Any) -> argparse.ArgumentParser:
    parser = add_command(commands, "distill", "train a fresh model of any architecture on a run's "
                                              "dreams only")
    parser.add_argument("--dreams", required=True, metavar="FILE",
                        help="a dreams file (RUN/dreams.npz of a CoDream run)")
    parser.add_argument("--model", required=True, metavar="NAME",
                        help="cnn, wide_cnn, resnet8, vgg, mlp or package.module:factory")
    parser.add_argument("--steps", type=int, default=_SERVER.steps, help="optimiser steps")
    parser.add_argument("--lr", type=float, default=_SERVER.lr, help="SGD learning rate")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=_SERVER.batch_size,
                        metavar="N", help="dreams per step")
    parser.add_argument("--temperature", type=float, default=_TEMPERATURE,
                        help="distillation temperature T")
    parser.add_argument("--seed", type=int, default=0,
                        help="initial weights and dream sampling (default: 0)")
    parser.add_argument("--out", default="distilled.pt", metavar="MODEL.pt",
                        help="where to write the model file")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--dataset", metavar="SPEC",
                        help="also measure the model on this data set's test split (simulate's "
                             "--dataset syntax)")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    parser.set_defaults(func=run_distill)
    return parser
