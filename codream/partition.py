"""Split a data set among clients, IID or with Dirichlet label skew, and measure the skew."""

from __future__ import annotations

import math

import numpy as np

ALLOWED_SCHEMES = "iid, dirichlet:ALPHA (ALPHA > 0, e.g. dirichlet:0.5)"

# Resampling budget for the Dirichlet scheme. With the balancing rule below, draws that leave a
# client under min_size are rare unless min_size is close to N / num_clients.
_MAX_ATTEMPTS = 1000


def partition(
    labels: np.ndarray, num_clients: int, scheme: str, seed: int, min_size: int = 10
) -> list[np.ndarray]:
    """Return one sorted index array per client; disjoint and together covering every sample.

    `dirichlet:ALPHA` follows the common label-skew recipe (Yurochkin et al. 2019; Hsu et al.
    2019): for each class, proportions over clients are drawn from Dir(ALPHA); a client that
    already holds N / num_clients samples gets no more, which keeps client sizes in range
    without changing the per-class skew much. Small ALPHA means each client sees few classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    n = len(labels)
    if num_clients * min_size > n:
        raise ValueError(
            f"cannot give each of {num_clients} clients min_size={min_size} samples: "
            f"only {n} samples"
        )
    alpha = _parse_scheme(scheme)
    rng = np.random.default_rng(seed)
    if alpha is None:
        perm = rng.permutation(n)
        return [np.sort(part) for part in np.array_split(perm, num_clients)]
    for _ in range(_MAX_ATTEMPTS):
        parts = _dirichlet_draw(labels, num_clients, alpha, rng)
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"{scheme} gave some client fewer than min_size={min_size} samples in "
        f"{_MAX_ATTEMPTS} draws; use a larger ALPHA, fewer clients or a smaller min_size"
    )


def _parse_scheme(scheme: str) -> float | None:
    """None for IID, else the Dirichlet concentration."""
    if scheme == "iid":
        return None
    if scheme.startswith("dirichlet:"):
        try:
            alpha = float(scheme[len("dirichlet:") :])
        except ValueError:
            alpha = float("nan")
        if math.isfinite(alpha) and alpha > 0:
            return alpha
    raise ValueError(f"unknown partition scheme {scheme!r}; allowed: {ALLOWED_SCHEMES}")


def is_valid_scheme(scheme: str) -> bool:
    """Whether `partition` accepts `scheme` ('iid' or 'dirichlet:ALPHA' with a finite ALPHA > 0)."""
    try:
        _parse_scheme(scheme)
    except ValueError:
        return False
    return True


def _dirichlet_draw(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    cap = len(labels) / num_clients
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        p = rng.dirichlet(np.full(num_clients, alpha))  # (K,)
        p = p * np.array([len(part) < cap for part in parts])  # full clients take no more
        if p.sum() == 0:  # float edge case: fall back to an even spread
            p = np.ones(num_clients)
        cuts = (np.cumsum(p / p.sum()) * len(idx)).astype(int)[:-1]
        for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
            part.extend(chunk.tolist())
    return parts


def class_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Counts per (client, class): the basis for logging and measuring skew."""
    labels = np.asarray(labels)
    hist = np.zeros((len(parts), num_classes), dtype=np.int64)  # (K, C)
    for k, idx in enumerate(parts):
        hist[k] = np.bincount(labels[idx], minlength=num_classes)[:num_classes]
    return hist


def format_histogram(hist: np.ndarray) -> str:
    """A fixed-width table so a run's log shows at a glance which client holds which classes."""
    num_classes = hist.shape[1]
    width = max(5, len(str(int(hist.max(initial=0)))) + 1)
    header = "client" + "".join(f"{f'c{c}':>{width}}" for c in range(num_classes))
    header += f"{'total':>{width + 2}}"
    rows = [header]
    for k, row in enumerate(hist):
        cells = "".join(f"{int(v):>{width}}" for v in row)
        rows.append(f"{k:>6}{cells}{int(row.sum()):>{width + 2}}")
    return "\n".join(rows)


def label_skew(hist: np.ndarray) -> float:
    """Mean total-variation distance between each client's label distribution and the global one.

    0 when every client has the global class mix, approaching 1 when clients hold disjoint rare
    classes. Clients with no samples have no distribution and are left out.
    """
    hist = np.asarray(hist, dtype=np.float64)  # (K, C)
    totals = hist.sum(axis=1)  # (K,)
    if totals.sum() == 0:
        return 0.0
    global_dist = hist.sum(axis=0) / totals.sum()  # (C,)
    nonempty = totals > 0
    client_dist = hist[nonempty] / totals[nonempty, None]  # (K', C)
    return float(0.5 * np.abs(client_dist - global_dist).sum(axis=1).mean())
