"""Retiring a SO_REUSEPORT listener without resetting a queued connection.

Owns: ``steer_away_from_last(sock, keep)``, ``stop_steering(sock)`` and
``accept_queue_length(sock)``.

Why: Linux resets every connection still queued on a SO_REUSEPORT listener
when it closes (unless ``net.ipv4.tcp_migrate_req`` is on, a host-wide
setting we cannot assume). Scaling down is the one moment a slot's listener
closes, so before it does the master attaches a classic BPF program to the
port's reuseport group that picks ``rxhash % keep``: new connections only go
to the first ``keep`` listeners (the group keeps listeners in the order they
started listening, and the retiring slot is always the newest, so it is the
last). The retiring worker keeps accepting until the kernel reports its accept
queue empty (``TCP_INFO``'s ``tcpi_unacked`` is the queue length on a
listener), and only then is it stopped and the listener closed. The program
is detached afterwards, which returns the group to the kernel's own hash.

The alternative, accepting the queue while the socket still receives new
connections, can never be sure it is empty; steering makes it so.

Rule: imports nothing from the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
_SKF_AD_OFF = -0x1000
_SKF_AD_RXHASH = 32
_BPF_LD_W_ABS = 0x00 | 0x00 | 0x20
_BPF_ALU_MOD_K = 0x04 | 0x90 | 0x00
_BPF_RET_A = 0x06 | 0x10
_INSN = struct.Struct("HBBI")
_TCPI_UNACKED_OFFSET = 24  # after 8 one-byte fields and rto, ato, snd_mss, rcv_mss


def steer_away_from_last(sock: socket.socket, keep: int) -> bool:
    """New connections of ``sock``'s group go to its first ``keep`` listeners only."""
    if keep < 1:
        return False
    program = b"".join((
        _INSN.pack(_BPF_LD_W_ABS, 0, 0, (_SKF_AD_OFF + _SKF_AD_RXHASH) & 0xFFFFFFFF),
        _INSN.pack(_BPF_ALU_MOD_K, 0, 0, keep),
        _INSN.pack(_BPF_RET_A, 0, 0, 0),
    ))
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", 3, ctypes.addressof(buffer))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError:
        return False
    return True


def stop_steering(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)


def accept_queue_length(sock: socket.socket) -> int:
    """Connections waiting in a TCP listener's accept queue (-1 if unknown)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return -1
    if len(info) < _TCPI_UNACKED_OFFSET + 4:
        return -1
    return int(struct.unpack_from("I", info, _TCPI_UNACKED_OFFSET)[0])
