"""No handler thread of the coordinator service outlives `stop()`, over real gRPC on loopback.

grpc reports a stopped server once its calls are cancelled, while their handlers may still be
running on its worker threads: a member's heartbeat handler then retires the membership and logs
"node ... left the federation". Run after `stop()` had returned, that log line was written, at
the end of the test suite, to a stream pytest had already closed ("--- Logging error ---").
"""

from __future__ import annotations

import threading
import time

import pytest
from service_helpers import serving, tiny_config

from coordinator.membership import Membership

pytestmark = pytest.mark.integration


def test_stop_returns_only_after_the_heartbeat_handlers_have_finished(tmp_path, monkeypatch):
    retired = threading.Event()
    heartbeat = Membership.heartbeat

    def slow_to_close(self, member, open_):
        if not open_:
            time.sleep(0.5)  # a handler still at work when its call is already cancelled
        heartbeat(self, member, open_)
        if not open_:
            retired.set()

    monkeypatch.setattr(Membership, "heartbeat", slow_to_close)
    with serving(tiny_config(tmp_path / "run")) as served:
        node = served.node("node-0").enter()
        deadline = time.monotonic() + 30
        while not served.service.membership.get(node.member_id).heartbeat_open:
            assert time.monotonic() < deadline, "the heartbeat stream never opened"
            time.sleep(0.02)
        served.service.stop(0)  # the node is still beating: its stream is cancelled
        assert retired.is_set(), "stop() returned while a heartbeat handler was still running"
        assert served.service.admission.open_calls() == {}
        assert served.service.membership.memberships() == 0
