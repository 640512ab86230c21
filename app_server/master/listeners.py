"""Binding the listening sockets.

Owns: ``bind_listeners(binds, reuse_port=..., backlog=...)``, which turns each
``BindSpec`` into a listening, non-blocking socket: TCP over IPv4 or IPv6
(IPv6 sockets are IPV6_V6ONLY, so ``[::]:8000`` and ``0.0.0.0:8000`` can both
be bound), ``unix:/path`` (a stale socket file is replaced; anything else at
the path is left alone), and ``fd://N`` (an inherited descriptor, used as is).
Either every listener is bound or none is: on the first failure the ones
already bound are closed and ``ListenerError`` names the address and the OS
error. ``close_listeners`` undoes it, removing the socket files it created.

The master (issue 4) calls this before forking, once per worker slot when
SO_REUSEPORT is on, and holds the sockets for the whole run: Linux resets the
connections still queued on a SO_REUSEPORT listener when it is closed, unless
``net.ipv4.tcp_migrate_req`` is on (Linux 5.14+), so a slot's listener is only
closed when the slot itself is retired. Today the CLI calls it for its single
worker. systemd's LISTEN_FDS sockets are not bound here.

Rule: imports only ``settings.model`` from the package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

from app_server.settings.model import BindKind, BindSpec

DEFAULT_BACKLOG = 2048
# Owner and group may connect: a reverse proxy reaches the socket by sharing
# the server's group, other local users cannot.
UNIX_SOCKET_MODE = 0o660


class ListenerError(Exception):
    """A listener could not be set up; ``str()`` is the one line to show."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address, reason)
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot listen on {self.address}: {self.reason}"


def bind_listeners(
    binds: tuple[BindSpec, ...], *, reuse_port: bool = False, backlog: int = DEFAULT_BACKLOG
) -> list[socket.socket]:
    """One listening, non-blocking socket per bind, in order; all or nothing."""
    sockets: list[socket.socket] = []
    try:
        for bind in binds:
            sockets.append(bind_listener(bind, reuse_port=reuse_port, backlog=backlog))
    except ListenerError:
        close_listeners(sockets, binds[: len(sockets)])
        raise
    return sockets


def bind_listener(
    bind: BindSpec, *, reuse_port: bool = False, backlog: int = DEFAULT_BACKLOG
) -> socket.socket:
    try:
        if bind.kind is BindKind.UNIX:
            sock = _bind_unix(bind.path, backlog)
        elif bind.kind is BindKind.FD:
            sock = _adopt_fd(bind.fd, backlog)
        else:
            sock = _bind_tcp(bind.host, bind.port, reuse_port, backlog)
    except OSError as exc:
        raise ListenerError(str(bind), _reason(exc)) from exc
    sock.setblocking(False)
    return sock


def close_listeners(sockets: list[socket.socket], binds: tuple[BindSpec, ...]) -> None:
    """Close the listeners; remove the files of the ``unix:`` ones bound here."""
    for sock, bind in zip(sockets, binds, strict=False):
        sock.close()
        if bind.kind is BindKind.UNIX:
            remove_socket_file(bind.path)


def remove_socket_file(path: str) -> None:
    """Unlink a ``unix:`` listener's file (only if it is a socket)."""
    if _is_socket_file(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{exc.strerror} (another process is listening there)"
    if exc.errno == errno.EACCES:
        return f"{exc.strerror} (ports below 1024 need privileges)"
    return exc.strerror or str(exc)


def _bind_tcp(host: str, port: int, reuse_port: bool, backlog: int) -> socket.socket:
    family, address = _resolve(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restarted server can bind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, _reuse_port_option(), 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The first address for a host name; IP literals need no lookup."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return family, (str(address[0]), int(address[1]))


def _reuse_port_option() -> int:
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not supported here; use --no-reuse-port")
    return int(option)


def _bind_unix(path: str, backlog: int) -> socket.socket:
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # Before listen(): nobody can connect until the mode is right.
        os.chmod(path, UNIX_SOCKET_MODE)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    """Unlink a socket file nobody listens on; refuse anything else."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: left behind by a server that is gone
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


def _is_socket_file(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _adopt_fd(fd: int, backlog: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM:
        sock.detach()  # not ours to close
        raise OSError(errno.ENOTSOCK, f"file descriptor {fd} is not a stream socket")
    try:
        sock.listen(backlog)  # already listening: only updates the backlog
    except OSError:
        sock.detach()
        raise
    return sock
