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
