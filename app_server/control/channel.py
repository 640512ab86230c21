"""The control channel's sockets: the pair, descriptor passing, reading.

Owns: ``channel_pair()`` (made before the fork), ``send_adopt``/``receive``
(a message with listening sockets as ``SCM_RIGHTS`` descriptors),
``close_fds`` and ``read_ready``, the non-blocking read-until-EAGAIN loop
that the master (its workers' channels), the worker (its master's channel)
and the master's metrics endpoint (its HTTP connections) share.

Rule: imports nothing from the package but ``control.messages``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

from app_server.control.messages import MAX_PACKET, ControlError, Kind, encode

log = logging.getLogger("app_server.error")
_T = TypeVar("_T")


MAX_FDS = 16  # listeners one ADOPT may carry: a slot has one per TCP bind


def send_adopt(channel: socket.socket, slot: int, sockets: list[socket.socket]) -> None:
    """ADOPT ``slot``, with its listeners' descriptors; raises OSError if not sent."""
    if not sockets or len(sockets) > MAX_FDS:
        raise ValueError(f"ADOPT carries 1 to {MAX_FDS} listeners, not {len(sockets)}")
    socket.send_fds(channel, [encode(Kind.ADOPT, 0, slot)], [s.fileno() for s in sockets])


def receive(channel: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """One packet and the descriptors that came with it (the caller owns them).

    An empty packet is EOF. Descriptors arrive close-on-exec; if the kernel
    had to drop some (``MSG_CTRUNC``) the ones that came are closed and
    ``ControlError`` is raised.
    """
    packet, fds, flags, _ = socket.recv_fds(channel, size, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
    if flags & socket.MSG_CTRUNC:
        close_fds(fds)
        raise ControlError("control packet with more descriptors than a message may carry")
    return packet, fds


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(master end, worker end); both non-blocking and close-on-exec."""
    master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # A metrics snapshot is one packet; bounded labels keep it far below this.
    worker_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_PACKET)
    master_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_PACKET)
    master_end.setblocking(False)
    worker_end.setblocking(False)
    return master_end, worker_end


def read_ready(recv: Callable[[], _T], eof: _T) -> Iterator[_T]:
    """What ``recv`` returns, call after call, until the socket would block.

    ``recv`` reads one packet or chunk from a non-blocking socket. ``eof``
    is what it returns at end of file; a read error ends the stream the same
    way (a reset peer is a gone peer), and ``eof`` is always the last item.
    A packet that broke the protocol (``ControlError``) is logged and
    skipped, so one bad packet does not hide the ones behind it. Reading
    until EAGAIN matters: the selectors are level-triggered, but a dead
    peer's last packets must all be read before its EOF is acted on.
    """
    while True:
        try:
            item = recv()
        except (BlockingIOError, InterruptedError):
            return
        except ControlError as exc:
            log.error("control channel: %s", exc)
            continue
        except OSError:
            item = eof
        yield item
        if item == eof:
            return


def write_ready(sock: socket.socket, data: bytes) -> bytes | None:
    """Send what a non-blocking ``sock`` takes now: the rest of ``data``, or
    None when the peer is gone (a write error), so the caller closes it."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        return None
    return data[sent:]
