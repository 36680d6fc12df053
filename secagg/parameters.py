"""Bell et al.'s degree and threshold for SecAgg+: the sparsest graph that stays secure and correct.

Why: SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, CCS 2020) masks each client with k
random neighbours (a Harary graph under a random relabelling) instead of all n - 1. The graph
must be chosen so that, with a fraction `corrupt_rate` of clients colluding with the server and
a fraction `dropout_rate` dropping out, (1) the honest survivors stay connected, (2) no client
has t corrupt neighbours (security), and (3) every client keeps t surviving neighbours (it can
be unmasked); each bad event is bounded by 2^-security resp. 2^-correctness over all n clients
(union bound). This searches the smallest even k meeting all three and picks the smallest valid
t, raised to a strict majority of the neighbourhood, which this library's sessions require.

Against an *active* coordinator colluding with `colluding` corrupt clients (the authenticated
sessions' threat, secagg/README.md) the threshold must also satisfy 2t - (k + 1) > c_u, c_u the
corrupt clients in a victim's neighbourhood of k + 1: the coordinator can certify two survivor
lists with their help and split the honest neighbours between them, one list asking b-shares
of the victim and the other its s_sk-shares; honest holders each answer one list, so it
collects t of both only if (k + 1 - c_u) + 2 c_u >= 2t. That is the condition Bonawitz et al.
2017 prove their active-adversary setting under (t > 2n/3 with fewer than n/3 corrupt, on the
complete graph, satisfies it), applied to one neighbourhood. Bell et al. 2020 prove the
semi-honest and semi-malicious settings with a graph drawn independently of the corruption;
here the coordinator draws the graph seed (the session id), so it may place every accomplice
next to the victim: c_u is taken as min(colluding, k), not as a hypergeometric tail.
Pure Python (lgamma), no scipy; results are cached per argument tuple.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

SECURITY_BITS = 40  # statistical security: a bad graph with probability < 2^-40
CORRECTNESS_BITS = 20  # a step that cannot unmask with probability < 2^-20
_EPS = 1e-14  # rounding of rate x n away from the insecure side


@dataclass(frozen=True)
class SparseParameters:
    degree: int  # k, even: neighbours per client
    threshold: int  # t: shares out of the neighbourhood (k + 1) that rebuild a secret


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _hypergeometric_pmf(population: int, marked: int, draws: int) -> list[float]:
    """P[X = j] for j = 0..draws: marked clients among `draws` neighbours drawn without
    replacement from `population` others (the random relabelling of the Harary graph)."""
    total = _log_choose(population, draws)
    out = []
    for j in range(draws + 1):
        if j > marked or draws - j > population - marked:
            out.append(0.0)
        else:
            out.append(math.exp(_log_choose(marked, j) + _log_choose(population - marked, draws - j)
                                - total))
    return out


def _log_disconnected(n: int, k: int, bad: int) -> float:
    """ln of a union bound on the Harary graph losing connectivity when `bad` clients are
    removed: that needs two disjoint runs of k/2 consecutive removed clients on its ring."""
    if k > bad:
        return -math.inf
    pairs = math.log(n) + math.log(n - k - 1) - math.log(2)
    return (pairs + math.lgamma(bad + 1) + math.lgamma(n - k + 1) - math.lgamma(n + 1)
            - math.lgamma(bad - k + 1))


def _check_rates(corrupt_rate: float, dropout_rate: float) -> None:
    if not (0 <= corrupt_rate < 1 and 0 <= dropout_rate < 1 and corrupt_rate + dropout_rate <= 0.9):
        raise ValueError("rates must lie in [0, 1) with corrupt_rate + dropout_rate <= 0.9, got "
                         f"{corrupt_rate}, {dropout_rate}")


def collusion_threshold(neighbourhood: int, colluding: int) -> int:
    """The smallest t of a neighbourhood of `neighbourhood` members (itself and its neighbours)
    with 2t - neighbourhood > min(colluding, neighbourhood - 1): an active coordinator with that
    many accomplices in the neighbourhood cannot collect t shares of both of a member's
    secrets. With colluding = 0 it is the strict majority floor(m/2) + 1."""
    if colluding < 0:
        raise ValueError(f"colluding must be >= 0, got {colluding}")
    return (neighbourhood + min(colluding, neighbourhood - 1)) // 2 + 1


def threshold_for(n: int, k: int, corrupt_rate: float, dropout_rate: float,
                  security: int = SECURITY_BITS, correctness: int = CORRECTNESS_BITS,
                  colluding: int = 0) -> int | None:
    """The smallest valid threshold for degree k, or None when k is too small: the honest
    survivors may be disconnected, or no t lies above the corrupt neighbours' count (t1), above
    the active coordinator's bound for `colluding` accomplices (`collusion_threshold`) and at
    or below the surviving neighbours' count (t2) with the required probabilities."""
    corrupt = math.floor((corrupt_rate + _EPS) * n)
    survivors = math.ceil((1 - dropout_rate - _EPS) * n)
    bad = corrupt + math.floor((dropout_rate + _EPS) * n)
    if _log_disconnected(n, k, bad) >= -(security + 1) * math.log(2):  # half the budget each
        return None
    per_client = 2.0 ** -(security + 1) / n
    unmask_fails = 2.0 ** -correctness / n
    # t1: the fewest t - 1 with P[corrupt neighbours > t - 1] <= per_client
    corrupt_pmf = _hypergeometric_pmf(n, corrupt, k)
    tail, t1 = 0.0, k
    for j in range(k, -1, -1):
        tail += corrupt_pmf[j]
        if tail > per_client:
            break
        t1 = j - 1
    t1 = max(t1, 0)
    # t2: the most shares t with P[surviving neighbours < t] <= unmask_fails
    survive_pmf = _hypergeometric_pmf(n, survivors, k)
    below, t2 = 0.0, k
    for j in range(k + 1):
        if below + survive_pmf[j] > unmask_fails:
            t2 = j
            break
        below += survive_pmf[j]
    threshold = max(t1 + 1, 2, collusion_threshold(k + 1, colluding))  # >= a strict majority
    return threshold if threshold <= t2 else None


@lru_cache(maxsize=256)
def sparse_parameters(n: int, corrupt_rate: float = 0.05, dropout_rate: float = 0.1,
                      security: int = SECURITY_BITS, correctness: int = CORRECTNESS_BITS,
                      colluding: int = 0) -> SparseParameters | None:
    """The smallest even degree (and its threshold) for n clients, `colluding` of them working
    with an active coordinator (0: a semi-honest one, Bell et al.'s main setting); None when
    only a degree of n - 1 or more would do (then the complete graph is the answer)."""
    _check_rates(corrupt_rate, dropout_rate)
    for k in range(2, n - 1, 2):
        threshold = threshold_for(n, k, corrupt_rate, dropout_rate, security, correctness,
                                  colluding)
        if threshold is not None:
            return SparseParameters(k, threshold)
    return None
