"""The node's record of begun secure sessions: its file format, its bound, its start-up refusals.

A node never begins a session id twice, across restarts too when it has a state dir
(client_node.used_sessions); a file it cannot read back stops it at start, with one line.
"""

import logging
import threading

import pytest
from node_helpers import begin_message
from test_daemon import CODE, FakeCoordinator, RpcError, joined, tiny_logic

from client_node.channel import ChannelSecurity
from client_node.daemon import NodeDaemon
from client_node.node_options import NodeOptions
from client_node.used_sessions import (
    MAGIC,
    UsedSessions,
    UsedSessionsError,
    decode_ids,
    encode_ids,
    load_used_sessions,
    open_used_sessions,
    remembered,
    used_sessions_path,
)
from codream import atomic_files
from codream.cli import main
from codream.config import RunConfig
from protos.codream.v1 import codream_pb2 as pb
from secagg import SecAggConfig

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16


def options(state_dir=None, node_id="node-a"):
    return NodeOptions("127.0.0.1:1", node_id, ChannelSecurity(), device="cpu", pull_wait=0.5,
                       state_dir=None if state_dir is None else str(state_dir))


# -- pure -------------------------------------------------------------------------------------
def test_remembered_adds_the_newest_and_forgets_the_oldest_beyond_the_bound():
    assert remembered((), A, bound=2) == (A,)
    assert remembered((A, B), C, bound=2) == (B, C)
    assert remembered((A, B), A, bound=3) == (B, A)  # never twice in the list
    with pytest.raises(ValueError, match="16 bytes"):
        remembered((), b"short")


def test_the_file_format_round_trips_at_16_bytes_an_id():
    for ids in [(), (A,), (A, B, C)]:
        data = encode_ids(ids)
        assert len(data) == len(MAGIC) + 16 * len(ids) + 32
        assert decode_ids(data) == ids


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[:-1], "not a whole list"),
    (lambda data: data[:20], "not a whole list"),
    (lambda data: b"", "not a whole list"),
    (lambda data: b"X" + data[1:], "header"),
    (lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:], "checksum"),
    (lambda data: data[:-16 - 32] + data[-32:], "checksum"),  # one id cut out, lengths still fit
])
def test_a_damaged_file_is_an_error_never_an_empty_list(damage, reason):
    with pytest.raises(ValueError, match=reason):
        decode_ids(damage(encode_ids((A, B))))


# -- on disk ----------------------------------------------------------------------------------
def test_recorded_ids_survive_into_a_new_load_within_the_bound(tmp_path):
    path = tmp_path / "state" / "node-a.sessions"  # the state dir need not exist yet
    first = load_used_sessions(path, bound=2)
    assert len(first) == 0 and not path.exists()
    for sid in (A, B, C):
        first.record(sid)
    assert path.stat().st_size == len(MAGIC) + 2 * 16 + 32  # the bound keeps the file small
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_used_sessions(path, bound=2)
    assert again.ids == (B, C) and A not in again and C in again
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temp file left over
    assert load_used_sessions(path, bound=1).ids == (C,)  # a smaller bound keeps the newest


def test_each_record_is_fsynced_with_its_rename_before_it_returns(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic_files.os, "fsync", lambda fd: synced.append(fd))
    UsedSessions(path=tmp_path / "node-a.sessions").record(A)
    assert len(synced) == 2  # the file, then its folder (the rename)


def test_a_failed_write_remembers_nothing(tmp_path):
    (tmp_path / "file").write_text("")
    used = UsedSessions(path=tmp_path / "file" / "node-a.sessions")
    with pytest.raises(OSError):
        used.record(A)
    assert A not in used


def test_an_unreadable_or_corrupt_file_stops_the_node_naming_it(tmp_path):
    path = tmp_path / "node-a.sessions"
    path.write_bytes(encode_ids((A,))[:-3])
    with pytest.raises(UsedSessionsError) as corrupt:
        load_used_sessions(path)
    message = str(corrupt.value)
    assert str(path) in message and "not a whole list" in message
    assert "delete it only if you know that no secure session" in message and "\n" not in message
    path.unlink()
    path.mkdir()  # a folder where the file should be: cannot be read
    with pytest.raises(UsedSessionsError, match="cannot be read"):
        load_used_sessions(path)


def test_the_file_sits_in_the_state_dir_and_without_one_a_warning_says_what_is_lost(tmp_path, caplog):
    assert used_sessions_path(options(tmp_path)) == tmp_path / "node-a.sessions"
    assert used_sessions_path(options()) is None
    with caplog.at_level(logging.WARNING, logger="client_node.used_sessions"):
        used = open_used_sessions(options())
        assert used.path is None
        assert caplog.records == []  # said at the first session, not at every start
        used.record(b"a" * 16)
        used.record(b"b" * 16)
    assert [r.message for r in caplog.records if "in memory only" in r.message] != []
    assert len(caplog.records) == 1  # once


# -- the node ----------------------------------------------------------------------------------
CONFIG = SecAggConfig(n_clients=2, dim=4, clip=10.0)


def _begin(session_id):
    return pb.Task(task_id=f"begin-{session_id.hex()[:4]}", round=0, coordinator_run="run-a",
                   sequence=1, secagg_begin=begin_message(CONFIG, session_id, 1, 1.0))


def _run_daemon(state_dir, joins, pulls):
    """One node process against the scripted coordinator; the results it submitted."""
    stop = threading.Event()
    fake = FakeCoordinator(stop, joins=joins, pulls=pulls)
    daemon = NodeDaemon(options(state_dir), stop, connect=fake.connect,
                        build_logic=lambda config, index, device, whole_dataset=False:
                        tiny_logic(config, index, device), sleep=lambda _: None)
    daemon.run()
    return fake.sent("SubmitResult")


def test_a_restarted_daemon_refuses_the_session_its_previous_process_began(tmp_path):
    [began] = _run_daemon(tmp_path, [joined(index=1)], [_begin(A)])
    assert began.WhichOneof("body") == "secagg_message"
    [refused] = _run_daemon(tmp_path, [joined(index=1)], [_begin(A)])  # a new process, same dir
    assert refused.WhichOneof("body") == "skip" and "already started" in refused.skip.reason
    [other] = _run_daemon(tmp_path, [joined(index=1)], [_begin(B)])
    assert other.WhichOneof("body") == "secagg_message"


def test_a_daemon_rebuilding_for_a_new_run_config_still_refuses_its_sessions():
    """The coordinator chooses the run config sent at Join: a changed one rebuilds the node's
    logic, which must not come with a fresh (empty) record, with or without a state dir."""
    other = RunConfig(dataset="digits", clients=2, models=("cnn",), weighting="equal")
    first, second = _run_daemon(None, [joined("m1", index=1), joined("m2", config=other, index=1)],
                                [_begin(A), RpcError(CODE.UNAVAILABLE, "gone"), _begin(A)])
    assert first.WhichOneof("body") == "secagg_message"
    assert second.WhichOneof("body") == "skip" and "already started" in second.skip.reason


def test_codream_node_with_a_corrupt_record_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "node-a.sessions").write_bytes(b"garbage")
    code = main(["node", "--coordinator", "127.0.0.1:1", "--node-id", "node-a", "--state-dir",
                 str(tmp_path), "--no-health", "--no-metrics", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"codream node: error: --state-dir: {tmp_path / 'node-a.sessions'} ")
    assert "delete it only if" in err
