"""`codream predict MODEL --input FILE.npz`: a trained model's class and probabilities per image.

The images are raw, as in an npz data set's `x` ((N, C, H, W), (N, H, W) or (N, H, W, C); uint8
is scaled to [0, 1], floats are taken as given): the model artifact applies the normalisation it
was trained with. Predictions go to `--output` (.npz: arrays `classes`, `probabilities`; .csv:
one row per image) or, without it, to stdout as CSV.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from codream.atomic_files import atomic_write
from codream.cli.model_files import add_model_argument, open_model
from codream.cli.parsing import add_command
from codream.config import ConfigError

OUTPUT_SUFFIXES = (".npz", ".csv")


def read_images(path: str, array: str) -> np.ndarray:
    """Array `array` of the .npz at `path`; ConfigError naming --input (or --array) otherwise."""
    if not Path(path).is_file():
        raise ConfigError(f"--input {path}: no such file; give an .npz holding the images as "
                          f"array '{array}' (numpy.savez(PATH, {array}=images))")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError, TypeError):
        raise ConfigError(f"--input {path}: not a NumPy .npz archive of numbers; write one with "
                          f"numpy.savez(PATH, {array}=images)") from None
    if array not in arrays:
        raise ConfigError(f"--input {path}: has no array '{array}' (it has "
                          f"{', '.join(arrays) or 'none'}); name the images' array with --array")
    return np.asarray(arrays[array])


def csv_text(classes: np.ndarray, probabilities: np.ndarray) -> str:
    """index,class,p0..p{K-1}: one row per image."""
    header = ",".join(["index", "class", *(f"p{k}" for k in range(probabilities.shape[1]))])
    rows = [",".join([str(i), str(int(c)), *(f"{p:.6g}" for p in row)])
            for i, (c, row) in enumerate(zip(classes, probabilities, strict=True))]
    return "\n".join([header, *rows]) + "\n"


def run_predict(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output {output}: must end in .npz or .csv")
    artifact = open_model(args.model, args.device)
    images = read_images(args.input, args.array)
    try:
        probabilities = artifact.predict_proba(images).numpy()
    except ValueError as error:  # a shape the model does not take, or not numbers
        raise ConfigError(f"--input {args.input}: {error}; give images of the model's shape "
                          f"(it was trained on {artifact.info.dataset})") from None
    classes = probabilities.argmax(1).astype(np.int64)
    if output is None:
        sys.stdout.write(csv_text(classes, probabilities))
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".csv":
        text = csv_text(classes, probabilities)
        atomic_write(output, lambda stream: stream.write(text.encode()))
    else:
        buffer = io.BytesIO()
        np.savez(buffer, classes=classes, probabilities=probabilities.astype(np.float32))
        atomic_write(output, lambda stream: stream.write(buffer.getvalue()))
    print(f"{len(classes)} predictions written to {output}", file=sys.stderr)
    return 0


def add_predict_command(commands: Any) -> argparse.ArgumentParser:
    parser = add_command(commands, "predict", "a trained model's class and probabilities per image")
    add_model_argument(parser)
    parser.add_argument("--input", required=True, metavar="FILE.npz",
                        help="an .npz with the raw images (as a data set's x), normalised by the model")
    parser.add_argument("--array", default="x", metavar="NAME", help="the images' array in --input")
    parser.add_argument("--output", metavar="FILE", help="where to write the predictions: .npz "
                        "(classes, probabilities) or .csv (index, class, p0..); without it, CSV "
                        "on stdout")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    parser.set_defaults(func=run_predict)
    return parser
