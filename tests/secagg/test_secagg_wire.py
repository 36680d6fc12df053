"""Round trips of every message type, and the purity rule: secagg never imports grpc."""

import subprocess
import sys

import numpy as np

from secagg import InProcessSession, SecAggConfig, decode
from secagg import session as session_module


def test_every_message_round_trips_through_bytes(monkeypatch):
    seen = []

    def recording_wire(message):
        data = message.to_bytes()
        back = decode(data, type(message))
        assert back.to_bytes() == data
        seen.append(type(message).__name__)
        return back

    monkeypatch.setattr(session_module, "_wire", recording_wire)
    config = SecAggConfig(n_clients=4, dim=5, authenticated=True)
    session = InProcessSession.create(config)
    result = session.step({i: np.ones(5) * 0.1 for i in range(4)}, dropouts={"masked_input": {3}})
    assert np.allclose(result.total, 0.3, atol=result.error_bound)
    assert set(seen) == {
        "AdvertiseKeys",
        "KeyDirectory",
        "ShareKeys",
        "ShareDelivery",
        "MaskedInput",
        "ConsistencyRequest",
        "ConsistencySignature",
        "UnmaskRequest",
        "UnmaskResponse",
    }


def test_masked_input_is_four_bytes_per_element():
    config = SecAggConfig(n_clients=2, dim=1000)
    session = InProcessSession.create(config)
    session.setup_block()
    message = session.clients[0].masked_input(0, np.zeros(1000))
    # header, count, d values + weight + clipped count, and the (empty) list of unheld peers
    assert len(message.to_bytes()) == 28 + 4 + 4 * (1000 + 2) + 4


def test_secrets_stay_out_of_repr():
    config = SecAggConfig(n_clients=2, dim=3)
    session = InProcessSession.create(config)
    session.setup_block()
    text = repr(session.clients[0]._secrets)
    assert "b_seeds" not in text and "held" not in text and "private" not in text


def test_importing_secagg_does_not_import_grpc():
    code = "import sys, secagg, secagg.session; assert 'grpc' not in sys.modules, 'grpc imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
