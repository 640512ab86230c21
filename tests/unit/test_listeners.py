"""bind_listeners: real binds on TCP (v4, v6), unix sockets and inherited fds."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from app_server.master.listeners import ListenerError, bind_listeners, close_listeners
from app_server.settings.model import BindKind, BindSpec


def tcp(host: str, port: int = 0) -> BindSpec:
    return BindSpec(BindKind.TCP, host=host, port=port)


def unix(path: Path) -> BindSpec:
    return BindSpec(BindKind.UNIX, path=str(path))


@contextmanager
def listening(*binds: BindSpec, reuse_port: bool = False) -> Iterator[list[socket.socket]]:
    sockets = bind_listeners(binds, reuse_port=reuse_port)
    try:
        yield sockets
    finally:
        close_listeners(sockets, binds)


def assert_accepts(listener: socket.socket) -> None:
    """A client connects and the listener hands over the connection."""
    family = listener.family
    with closing(socket.socket(family, socket.SOCK_STREAM)) as client:
        client.settimeout(5)
        client.connect(listener.getsockname())
        listener.settimeout(5)
        try:
            connection, _ = listener.accept()
        finally:
            listener.setblocking(False)
        connection.close()


def option(sock: socket.socket, level: int, name: int) -> int:
    return sock.getsockopt(level, name)


def test_tcp_v4_is_listening_and_non_blocking() -> None:
    with listening(tcp("127.0.0.1")) as [sock]:
        assert sock.family == socket.AF_INET
        assert sock.getsockname()[1] > 0
        assert sock.getblocking() is False
        assert option(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert not option(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT)
        assert option(sock, socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert_accepts(sock)


def test_reuse_port_lets_two_listeners_share_a_port() -> None:
    with listening(tcp("127.0.0.1"), reuse_port=True) as [first]:
        port = first.getsockname()[1]
        assert option(first, socket.SOL_SOCKET, socket.SO_REUSEPORT)
        with listening(tcp("127.0.0.1", port), reuse_port=True) as [second]:
            assert second.getsockname()[1] == port


def test_tcp_v6_is_v6_only() -> None:
    # The sandbox and CI have an IPv6 loopback; without one this raises ListenerError.
    with listening(tcp("::1")) as [sock]:
        assert sock.family == socket.AF_INET6
        assert option(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        assert_accepts(sock)


def test_host_name_is_resolved() -> None:
    with listening(tcp("localhost")) as [sock]:
        assert sock.family in (socket.AF_INET, socket.AF_INET6)


def test_port_in_use_names_the_address_and_binds_nothing() -> None:
    with listening(tcp("127.0.0.1")) as [taken]:
        port = taken.getsockname()[1]
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        with pytest.raises(ListenerError) as caught:
            bind_listeners((tcp("127.0.0.1", free_port), tcp("127.0.0.1", port)))
        assert str(caught.value) == (
            f"cannot listen on 127.0.0.1:{port}: Address already in use "
            "(another process is listening there)"
        )
    # All or nothing: the first listener was closed again, so its port is free.
    with listening(tcp("127.0.0.1", free_port)):
        pass


def test_unknown_host() -> None:
    with pytest.raises(ListenerError) as caught:
        bind_listeners((tcp("no-such-host.invalid", 80),))
    assert str(caught.value).startswith("cannot listen on no-such-host.invalid:80: ")


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with listening(unix(path)) as [sock]:
        assert sock.family == socket.AF_UNIX
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        assert sock.getblocking() is False
        assert_accepts(sock)
    assert not path.exists()  # removed on close


def test_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    with listening(unix(path)) as [sock]:
        assert_accepts(sock)


def test_live_unix_socket_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with listening(unix(path)):
        with pytest.raises(ListenerError) as caught:
            bind_listeners((unix(path),))
        assert str(caught.value) == (
            f"cannot listen on unix:{path}: Address already in use "
            "(another process is listening there)"
        )
        assert path.exists()


def test_regular_file_at_the_unix_path_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.write_text("precious")
    with pytest.raises(ListenerError) as caught:
        bind_listeners((unix(path),))
    assert str(caught.value) == f"cannot listen on unix:{path}: the path exists and is not a socket"
    assert path.read_text() == "precious"


def test_inherited_fd() -> None:
    original = socket.create_server(("127.0.0.1", 0))
    fd = os.dup(original.fileno())
    bind = BindSpec(BindKind.FD, fd=fd)
    try:
        with listening(bind) as [sock]:
            assert sock.fileno() == fd
            assert sock.getsockname() == original.getsockname()
            assert sock.getblocking() is False
            assert_accepts(sock)
    finally:
        original.close()


def test_fd_that_is_not_a_stream_socket() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ListenerError) as caught:
            bind_listeners((BindSpec(BindKind.FD, fd=udp.fileno()),))
        assert str(caught.value) == (
            f"cannot listen on fd://{udp.fileno()}: "
            f"file descriptor {udp.fileno()} is not a stream socket"
        )
        udp.getsockname()  # still open: not ours to close
    finally:
        udp.close()


def test_fd_that_is_not_open() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(ListenerError) as caught:
        bind_listeners((BindSpec(BindKind.FD, fd=read_end),))
    assert str(caught.value) == f"cannot listen on fd://{read_end}: Bad file descriptor"


# -- a port's reuseport group, as the master builds it ----------------------------------


def _queued_on(listeners: list[socket.socket], connections: int = 20) -> list[int]:
    """Connect ``connections`` times; how many landed in each listener's accept queue."""
    from app_server.master.reuseport import accept_queue_length

    port = listeners[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(connections)]
    try:
        return [accept_queue_length(s) for s in listeners]
    finally:
        for s in listeners:
            while True:
                try:
                    s.accept()[0].close()
                except BlockingIOError:
                    break
        for c in clients:
            c.close()


def test_slot_i_listener_is_index_i_of_the_reuseport_group() -> None:
    """The steering program's indices are slot numbers: the master's assumption, checked.

    One listener per slot, bound in slot order as the master does; TTOU
    retires (closes) the newest and TTIN binds a new one after it.
    """
    from app_server.master.listeners import bind_listener
    from app_server.master.reuseport import steer, stop_steering

    first = bind_listener(tcp("127.0.0.1"), reuse_port=True)
    port = first.getsockname()[1]
    slots = [first] + [bind_listener(tcp("127.0.0.1", port), reuse_port=True) for _ in range(3)]
    try:
        for index in range(4):
            assert steer(slots[0], [index])
            expected = [20 if i == index else 0 for i in range(4)]
            assert _queued_on(slots) == expected, f"slot {index}"
        slots.pop().close()  # TTOU: the newest slot's listener leaves the group
        slots.append(bind_listener(tcp("127.0.0.1", port), reuse_port=True))  # TTIN
        for index in range(4):
            assert steer(slots[1], [index])  # any socket of the group carries the program
            assert _queued_on(slots)[index] == 20, f"slot {index} after TTOU and TTIN"
        stop_steering(slots[0])
        assert sum(1 for n in _queued_on(slots, 200) if n > 0) == 4  # the kernel's hash again
    finally:
        for s in slots:
            s.close()
