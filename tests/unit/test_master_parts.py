"""The master's small parts on real sockets: the control channel's packets,
SO_REUSEPORT steering for a retiring listener, and the source watcher."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from app_server import control
from app_server.control import Kind, RecycleReason, StopReason
from app_server.master import reuseport
from app_server.master.watch import SourceWatcher
from app_server.workers.server import listen_backlog

# -- control channel ---------------------------------------------------------------


def test_messages_cross_the_socket_pair_whole_and_typed() -> None:
    master_end, worker_end = control.channel_pair()
    with master_end, worker_end:
        worker_end.send(control.encode(Kind.HEARTBEAT, 0, 2**40 + 7))
        worker_end.send(control.encode(Kind.RECYCLE, RecycleReason.MAX_REQUESTS, 10))
        master_end.send(control.encode(Kind.STOP, StopReason.RELOAD))
        assert control.decode(master_end.recv(64)) == (Kind.HEARTBEAT, 0, 2**40 + 7, b"")
        message = control.decode(master_end.recv(64))
        assert message.kind is Kind.RECYCLE
        assert RecycleReason(message.code) is RecycleReason.MAX_REQUESTS
        assert control.decode(worker_end.recv(64)) == (Kind.STOP, StopReason.RELOAD, 0, b"")
        snapshot = b'{"v":1}' * 10_000  # one packet, however large
        worker_end.send(control.encode_stats(snapshot))
        stats = control.decode(master_end.recv(control.MAX_PACKET))
        assert (stats.kind, stats.payload) == (Kind.STATS, snapshot)


def test_a_dead_peer_reads_as_eof() -> None:
    master_end, worker_end = control.channel_pair()
    worker_end.close()
    with master_end:
        assert master_end.recv(64) == b""


def test_read_ready_reads_every_waiting_packet_then_stops_at_eagain() -> None:
    master_end, worker_end = control.channel_pair()
    with master_end, worker_end:
        for value in range(3):
            worker_end.send(control.encode(Kind.HEARTBEAT, 0, value))
        packets = list(control.read_ready(lambda: master_end.recv(64), b""))
        assert [control.decode(p).value for p in packets] == [0, 1, 2]  # no EOF: still open
        worker_end.send(control.encode(Kind.READY))
        worker_end.close()
        # A dead peer's last packet is read before its EOF, which ends the stream.
        packets = list(control.read_ready(lambda: master_end.recv(64), b""))
        assert [control.decode(p).kind for p in packets[:-1]] == [Kind.READY]
        assert packets[-1] == b""


def test_read_ready_skips_a_packet_that_breaks_the_protocol() -> None:
    master_end, worker_end = control.channel_pair()
    with master_end, worker_end:
        worker_end.send(b"x")
        worker_end.send(control.encode(Kind.READY))

        def recv() -> bytes:
            packet = master_end.recv(64)
            control.decode(packet)  # raises ControlError for the bad one
            return packet

        assert [control.decode(p).kind for p in control.read_ready(recv, b"")] == [Kind.READY]


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x01" * 15,
        b"\x01" * 17,
        b"\x09" + b"\x00" * 15,
        b"\x06" + b"\x00" * 14 + b"\x05" + b"abc",
    ],
)
def test_malformed_packets_are_refused(packet: bytes) -> None:
    with pytest.raises(control.ControlError):
        control.decode(packet)


def test_adopt_carries_the_listeners_and_release_names_the_slot() -> None:
    master_end, worker_end = control.channel_pair()
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    try:
        control.send_adopt(master_end, 3, listeners)
        master_end.send(control.encode(Kind.RELEASE, 0, 3))
        packet, fds = control.receive(worker_end, 64)
        assert control.decode(packet) == (Kind.ADOPT, 0, 3, b"")
        assert len(fds) == 2
        received = [socket.socket(fileno=fd) for fd in fds]
        for ours, lent in zip(listeners, received, strict=True):
            # The same listening socket: a connection to ours is accepted from the copy.
            assert lent.getsockname() == ours.getsockname()
            with socket.create_connection(ours.getsockname(), timeout=5):
                lent.settimeout(5)
                lent.accept()[0].close()
            lent.close()  # our copy only: the original still listens
            with socket.create_connection(ours.getsockname(), timeout=5):
                ours.accept()[0].close()
        packet, fds = control.receive(worker_end, 64)
        assert (control.decode(packet), fds) == ((Kind.RELEASE, 0, 3, b""), [])
    finally:
        for s in (master_end, worker_end, *listeners):
            s.close()


def test_adopt_needs_listeners() -> None:
    master_end, worker_end = control.channel_pair()
    with master_end, worker_end, pytest.raises(ValueError):
        control.send_adopt(master_end, 0, [])


@pytest.mark.parametrize("timeout_s", [0.1, 0.5, 1, 2, 5, 10, 30, 3600])
def test_a_blocked_worker_is_late_within_a_second(timeout_s: float) -> None:
    """Heartbeats at most 250 ms apart; late after at most 750 ms without one.

    The last heartbeat before the loop blocks is at most one interval old,
    and the master marks it late ``late_after`` after that heartbeat: within
    a second of the block, whatever --timeout is, and never after --timeout.
    """
    interval = control.heartbeat_interval(timeout_s)
    late = control.late_after(timeout_s)
    assert 0.05 <= interval <= 0.25
    assert late >= min(2 * interval, timeout_s)  # one delayed beat is not late
    assert late <= min(1.0, timeout_s)


def test_stop_reasons_choose_the_websocket_close_code() -> None:
    assert StopReason.SHUTDOWN.websocket_close[0] == 1001
    for reason in (StopReason.RELOAD, StopReason.RECYCLE, StopReason.SCALE_DOWN):
        assert reason.websocket_close[0] == 1012


# -- reuseport steering ------------------------------------------------------------


def _group(n: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    port = 0
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        port = s.getsockname()[1]
        s.listen(512)
        s.setblocking(False)
        socks.append(s)
    return socks


def _spread(socks: list[socket.socket], connections: int) -> list[int]:
    port = socks[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    counts = [reuseport.accept_queue_length(s) for s in socks]
    for s in socks:
        while True:
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                break
            conn.close()
    for c in clients:
        c.close()
    return counts


def test_steering_keeps_new_connections_off_the_last_listener() -> None:
    socks = _group(3)
    try:
        before = _spread(socks, 120)
        assert sum(before) == 120 and before[2] > 0  # the kernel's hash uses all three
        assert reuseport.steer_away_from_last(socks[0], keep=2)
        steered = _spread(socks, 120)
        assert steered[2] == 0 and steered[0] > 0 and steered[1] > 0 and sum(steered) == 120
        reuseport.stop_steering(socks[0])
        after = _spread(socks, 120)
        assert after[2] > 0
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("allowed", [[0, 2, 3], [1, 2, 3], [1], [3, 1], [2, 0]])
def test_steering_can_skip_any_listener(allowed: list[int]) -> None:
    socks = _group(4)
    try:
        assert reuseport.steer(socks[2], allowed)
        spread = _spread(socks, 200)
        assert sum(spread) == 200
        for index in range(4):
            if index in allowed:
                assert spread[index] > 0, (index, spread)
            else:
                assert spread[index] == 0, (index, spread)
        reuseport.stop_steering(socks[0])
        assert all(n > 0 for n in _spread(socks, 200))
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("allowed", [[], [1, 1], [-1, 0]])
def test_steering_refuses_a_set_that_is_not_one(allowed: list[int]) -> None:
    (listener,) = _group(1)
    with listener:
        assert not reuseport.steer(listener, allowed)


def test_listen_backlog_is_what_listen_set() -> None:
    (listener,) = _group(1)
    with listener:
        assert listen_backlog(listener, 7) == 512
        listener.listen(100)
        assert listen_backlog(listener, 7) == 100


def test_accept_queue_length_counts_unaccepted_connections() -> None:
    (listener,) = _group(1)
    with listener:
        assert reuseport.accept_queue_length(listener) == 0
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        assert reuseport.accept_queue_length(listener) == 5
        listener.accept()[0].close()
        assert reuseport.accept_queue_length(listener) == 4
        for c in clients:
            c.close()


# -- source watcher ----------------------------------------------------------------


def test_watcher_sees_changed_added_and_removed_sources(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("x = 1\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "lib.py").write_text("")
    watcher = SourceWatcher(str(tmp_path))
    assert not watcher.changed()
    (tmp_path / ".venv" / "lib.py").write_text("ignored")
    (tmp_path / "notes.txt").write_text("not python")
    assert not watcher.changed()
    stat = app.stat()
    os.utime(app, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert watcher.changed()
    assert not watcher.changed()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    assert watcher.changed()
    (tmp_path / "pkg" / "mod.py").unlink()
    assert watcher.changed()


# -- applying a cover plan -----------------------------------------------------------


def test_cover_applies_only_the_difference_of_plans() -> None:
    from app_server.master.cover import Cover
    from app_server.master.model import Phase, Slot, Worker
    from app_server.master.policies import plan_cover

    socks = _group(3)
    pairs = [control.channel_pair() for _ in range(3)]
    slots = [Slot(i, [socks[i]]) for i in range(3)]
    for i, slot in enumerate(slots):
        slot.worker = Worker(100 + i, slot, pairs[i][0], 0.0, phase=Phase.READY)
    cover = Cover()
    try:
        assert cover.apply(slots, plan_cover(slots, first_ready=True))
        assert cover.steering is None and all(s.adopter is None for s in slots)
        assert slots[1].worker is not None
        slots[1].worker.late = True  # a blocked event loop
        assert cover.apply(slots, plan_cover(slots, first_ready=True))
        assert cover.steering == (0, 2)
        adopter = slots[1].adopter
        assert adopter is not None and adopter.pid in (100, 102)
        worker_end = pairs[adopter.pid - 100][1]
        packet, fds = control.receive(worker_end, 64)
        assert control.decode(packet) == (Kind.ADOPT, 0, 1, b"")
        assert len(fds) == 1
        with socket.socket(fileno=fds[0]) as lent:
            assert lent.getsockname() == socks[1].getsockname()
        # The same plan again: nothing is sent, nothing re-steered.
        assert cover.apply(slots, plan_cover(slots, first_ready=True))
        with pytest.raises(BlockingIOError):
            worker_end.recv(64)
        slots[1].worker.late = False  # it heartbeats again
        assert cover.apply(slots, plan_cover(slots, first_ready=True))
        assert control.decode(worker_end.recv(64)) == (Kind.RELEASE, 0, 1, b"")
        assert cover.steering is None and slots[1].adopter is None
    finally:
        for master_end, worker_end in pairs:
            master_end.close()
            worker_end.close()
        for s in socks:
            s.close()
