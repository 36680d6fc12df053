"""The node's record of begun secure sessions: its append-only file, kept whole however many
sessions follow, and its start-up refusals.

A node never begins a session id twice, across restarts too when it has a state dir
(client_node.used_sessions); a file it cannot read back stops it at start, with one line, except
for a torn last record (a crash during its append), which is cut off with a warning.
"""

import errno
import logging
import os
import threading

import pytest
from node_helpers import begin_message
from test_daemon import CODE, FakeCoordinator, RpcError, joined, tiny_logic

from client_node.channel import ChannelSecurity
from client_node.daemon import NodeDaemon
from client_node.node_options import NodeOptions
from client_node.used_sessions import (
    MAGIC,
    RECORD,
    UsedSessions,
    UsedSessionsError,
    decode_ids,
    encode_ids,
    encode_record,
    load_used_sessions,
    open_used_sessions,
    used_sessions_path,
)
from codream.cli import main
from codream.config import RunConfig
from protos.codream.v1 import codream_pb2 as pb
from secagg import SecAggConfig

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16


def options(state_dir=None, node_id="node-a"):
    return NodeOptions("127.0.0.1:1", node_id, ChannelSecurity(), device="cpu", pull_wait=0.5,
                       state_dir=None if state_dir is None else str(state_dir))


# -- pure -------------------------------------------------------------------------------------
def test_the_file_format_round_trips_at_24_bytes_an_id():
    assert len(MAGIC) == 16 and MAGIC != b"codream.sessid/1"  # a new version, not the bounded one
    for ids in [(), (A,), (A, B, C)]:
        data = encode_ids(ids)
        assert len(data) == len(MAGIC) + 24 * len(ids) and RECORD == 24
        assert decode_ids(data) == (ids, 0)
    assert encode_ids((A, B)) == MAGIC + encode_record(0, A) + encode_record(1, B)
    assert encode_record(0, A)[:16] == A and encode_record(0, A) != encode_record(1, A)  # indexed
    with pytest.raises(ValueError, match="16 bytes"):
        encode_record(0, b"short")


def _swap_records(data):
    first, second = data[16:40], data[40:64]
    return data[:16] + second + first + data[64:]


@pytest.mark.parametrize("damage, reason", [
    (lambda data: b"", "shorter than its 16-byte header"),  # never an empty list
    (lambda data: data[:10], "shorter than its 16-byte header"),
    (lambda data: b"X" + data[1:], "header"),
    (lambda data: b"codream.sessid/1" + data[16:], "header"),  # the bounded format's header
    (lambda data: data[:40] + bytes([data[40] ^ 1]) + data[41:], "checksum at record 1 of 3"),
    (lambda data: data[:60] + bytes([data[60] ^ 1]) + data[61:], "checksum at record 1 of 3"),
    (lambda data: data[:16] + data[40:], "checksum at record 0 of 2"),  # the first cut out
    (lambda data: data[:40] + data[64:], "checksum at record 1 of 2"),  # a middle one cut out
    (_swap_records, "checksum at record 0 of 3"),
    (lambda data: data[:64] + encode_record(2, A), "twice"),  # checksums fine, an id again
])
def test_a_damaged_file_is_an_error_never_a_shorter_list(damage, reason):
    with pytest.raises(ValueError, match=reason):
        decode_ids(damage(encode_ids((A, B, C))))


@pytest.mark.parametrize("kept", [1, 16, 23])
def test_a_torn_last_record_is_reported_after_the_whole_ones(kept):
    data = encode_ids((A, B)) + encode_record(2, C)[:kept]
    assert decode_ids(data) == ((A, B), kept)
    assert decode_ids(MAGIC + encode_record(0, A)[:kept]) == ((), kept)


# -- on disk ----------------------------------------------------------------------------------
def test_recorded_ids_are_appended_and_survive_into_a_new_load(tmp_path):
    path = tmp_path / "state" / "node-a.sessions"  # the state dir need not exist yet
    first = load_used_sessions(path)
    assert len(first) == 0 and not path.exists()
    first.record(A)
    inode = path.stat().st_ino
    for sid in (B, C):
        first.record(sid)
    assert path.read_bytes() == encode_ids((A, B, C))
    assert path.stat().st_ino == inode  # appended to, not rewritten into a new file
    assert path.stat().st_mode & 0o777 == 0o600
    first.record(B)  # already remembered: nothing to write (an id twice would fail the load)
    assert path.read_bytes() == encode_ids((A, B, C))
    again = load_used_sessions(path)
    assert again.ids == (A, B, C) and A in again and b"d" * 16 not in again
    assert not list(path.parent.glob(".*.tmp"))  # the header written atomically: no temp file left
    again.record(b"d" * 16)
    assert load_used_sessions(path).ids == (A, B, C, b"d" * 16)


def test_more_ids_than_the_old_bound_are_all_still_refused_after_a_reload(tmp_path, monkeypatch):
    """5000 > the 4096 the bounded record kept: the first ones must be there too. os.fsync is
    counted instead of run here, only so that 5000 of them cost nothing on a slow disk (the next
    test checks that each record is fsynced with the real file)."""
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    path = tmp_path / "node-a.sessions"
    ids = [index.to_bytes(16, "big") for index in range(5000)]
    used = load_used_sessions(path)
    for sid in ids:
        used.record(sid)
    assert len(synced) == 2 + 5000  # the header (file, folder), then every record
    assert path.stat().st_size == 16 + 24 * 5000
    again = load_used_sessions(path)
    assert len(again) == 5000 and again.ids == tuple(ids)
    assert all(sid in again for sid in ids[:1000])  # the oldest, which a bound pushed out first


def test_each_record_is_fsynced_before_it_returns(tmp_path, monkeypatch):
    path = tmp_path / "node-a.sessions"
    sizes_synced = []
    real_fsync = os.fsync

    def fsync(fd):
        sizes_synced.append(os.fstat(fd).st_size)  # the file (or folder) as it is made durable
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    used = UsedSessions(path=path)
    used.record(A)
    assert len(sizes_synced) == 3 and sizes_synced[0] == 16  # the header's file, its folder,
    assert sizes_synced[2] == 16 + 24  # then the record, synced with the record in the file
    used.record(B)
    assert sizes_synced[3:] == [16 + 48]  # one fsync per later record, after its bytes


def test_a_failed_write_remembers_nothing(tmp_path):
    (tmp_path / "file").write_text("")
    used = UsedSessions(path=tmp_path / "file" / "node-a.sessions")
    with pytest.raises(OSError):
        used.record(A)
    assert A not in used


@pytest.mark.parametrize("left", [10, 24])  # part of B's record, or all of it but not fsynced
def test_a_failed_append_is_not_remembered_and_the_next_record_follows_the_last_whole_one(
        tmp_path, monkeypatch, left):
    path = tmp_path / "node-a.sessions"
    used = load_used_sessions(path)
    used.record(A)
    real_fsync = os.fsync

    def failing_fsync(fd):
        os.ftruncate(fd, 16 + 24 + left)  # what of B's record reached the file
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        used.record(B)
    assert B not in used and used.ids == (A,)
    assert path.stat().st_size == 16 + 24 + left  # the failure left it there
    monkeypatch.setattr(os, "fsync", real_fsync)
    used.record(C)
    assert path.read_bytes() == encode_ids((A, C))  # cut back to A, then C as record 1
    assert load_used_sessions(path).ids == (A, C)


def test_a_torn_last_record_is_cut_off_at_load_with_a_warning(tmp_path, caplog):
    path = tmp_path / "node-a.sessions"
    path.write_bytes(encode_ids((A, B)) + encode_record(2, C)[:7])  # a crash while appending C
    with caplog.at_level(logging.WARNING, logger="client_node.used_sessions"):
        used = load_used_sessions(path)
    assert used.ids == (A, B) and C not in used  # C was never answered: safe to forget
    assert path.read_bytes() == encode_ids((A, B))  # cut off on disk, not only skipped
    [warning] = [r.getMessage() for r in caplog.records]
    assert str(path) in warning and "7 of 24 bytes" in warning and "torn" in warning
    used.record(C)  # the next append is a well-formed record 2
    assert path.read_bytes() == encode_ids((A, B, C))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="client_node.used_sessions"):
        assert load_used_sessions(path).ids == (A, B, C)
    assert caplog.records == []  # a whole file: no warning


@pytest.mark.parametrize("data, reason", [
    (b"", "shorter than its 16-byte header (0 bytes)"),
    (MAGIC[:12], "shorter than its 16-byte header (12 bytes)"),
    (b"codream.sessid/1" + A + bytes(32), "no codream.sessid/2 header"),
    (encode_ids((A, B, C))[:45] + b"\0" + encode_ids((A, B, C))[46:], "checksum at record 1 of 3"),
    (encode_ids((A, B)) + encode_record(2, A), "twice"),
    (encode_ids((A, B)) + encode_record(2, A) + b"torn", "twice"),  # refused before any repair
])
def test_a_corrupt_file_stops_the_node_naming_it_and_is_left_as_it_is(tmp_path, data, reason):
    path = tmp_path / "node-a.sessions"
    path.write_bytes(data)
    with pytest.raises(UsedSessionsError) as corrupt:
        load_used_sessions(path)
    message = str(corrupt.value)
    assert str(path) in message and reason in message and "\n" not in message
    assert "delete it only if you know that no secure session" in message
    assert path.read_bytes() == data  # nothing cut or rewritten: the operator decides


def test_an_unreadable_file_stops_the_node_naming_it(tmp_path):
    path = tmp_path / "node-a.sessions"
    path.mkdir()  # a folder where the file should be: cannot be read
    with pytest.raises(UsedSessionsError, match="cannot be read"):
        load_used_sessions(path)


def test_a_file_changed_under_the_node_is_never_written_over(tmp_path):
    """The record appends at the length it last saw: a file that appeared since the load (it
    would have been replaced by an empty one) or that shrank refuses the session (OSError)."""
    path = tmp_path / "node-a.sessions"
    used = load_used_sessions(path)
    path.write_bytes(encode_ids((A,)))
    with pytest.raises(FileExistsError, match="appeared"):
        used.record(B)
    assert path.read_bytes() == encode_ids((A,)) and B not in used
    path.write_bytes(MAGIC)  # an empty list, as a header write that failed at its folder leaves
    used.record(B)
    assert load_used_sessions(path).ids == (B,)
    path.write_bytes(MAGIC)
    with pytest.raises(OSError, match="shorter"):
        used.record(C)
    assert C not in used and path.read_bytes() == MAGIC


def test_a_size_that_cannot_hold_the_ids_is_refused():
    with pytest.raises(ValueError, match="cannot be a file"):
        UsedSessions((A,), path=os.devnull, file_size=16)
    with pytest.raises(ValueError, match="cannot be a file"):
        UsedSessions((A,), path=os.devnull)


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
    assert used.ids == (A, B)


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
