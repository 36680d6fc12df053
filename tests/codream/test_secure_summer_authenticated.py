"""`codream simulate`'s secure summer runs the authenticated protocol a cluster runs under mTLS:
signed advertisements, a consistency round, the same identity keys for every sum; "off" runs
the unauthenticated one; both release the same sum."""

import numpy as np
import pytest

from codream.aggregation import Contribution, PlainSummer
from codream.config import SecureAggregationConfig
from codream.messages import DreamStep
from codream.secure_summer import InProcessSecureSummer
from secagg.client import SecAggClient

WEIGHTS = {"node-0": 1.0, "node-1": 2.0, "node-2": 4.0}
SIZE = 2 * 1 * 2 * 2
TASK = DreamStep("r1/b0/s0", 1, 2, 1, 7, (2, 1, 2, 2))


def _contributions():
    return {n: Contribution(np.full(SIZE, i + 1.0, np.float32) * WEIGHTS[n], WEIGHTS[n])
            for i, n in enumerate(WEIGHTS)}


@pytest.fixture
def signatures(monkeypatch):
    """Who signed what: (client index, identity public key) per consistency signature."""
    signed = []
    sign = SecAggClient.sign_survivors

    def recording(client, request):
        signed.append((client.id, client._identity.public_key().public_bytes_raw()))
        return sign(client, request)

    monkeypatch.setattr(SecAggClient, "sign_survivors", recording)
    return signed


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_the_summer_signs_and_checks_consistency_with_keys_kept_across_sums(signatures, mode):
    summer = InProcessSecureSummer(SecureAggregationConfig(authentication=mode), WEIGHTS)
    assert summer.authenticated
    first = summer.sum(_contributions(), SIZE, TASK)
    signed_once = list(signatures)
    assert sorted(i for i, _ in signed_once) == [0, 1, 2]  # every survivor signed the list
    second = summer.sum(_contributions(), SIZE, TASK)
    assert signatures[3:] == signed_once  # the same identity keys: long-lived, as a node's
    plain = PlainSummer().sum(_contributions(), SIZE, TASK)
    for result in (first, second):
        np.testing.assert_allclose(result.total, plain.total, atol=1e-4)
        assert result.contributors == tuple(WEIGHTS)


def test_off_runs_the_unauthenticated_protocol_to_the_same_sum(signatures):
    summer = InProcessSecureSummer(SecureAggregationConfig(authentication="off"), WEIGHTS)
    off = summer.sum(_contributions(), SIZE, TASK)
    assert not summer.authenticated and signatures == []
    on = InProcessSecureSummer(SecureAggregationConfig(), WEIGHTS).sum(_contributions(), SIZE, TASK)
    np.testing.assert_array_equal(off.total, on.total)  # exact fixed point: bit for bit
