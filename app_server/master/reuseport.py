"""Choosing which SO_REUSEPORT listeners of a port get new connections.

Owns: ``steer(sock, allowed)``, ``steer_away_from_last(sock, keep)``,
``stop_steering(sock)`` and ``accept_queue_length(sock)``.

Linux spreads a port's new connections over its reuseport group by a hash
of the 4-tuple, whatever the state of the process behind each listener. A
classic BPF program attached to the group (``SO_ATTACH_REUSEPORT_CBPF``, on
any one of its sockets) overrides that: it returns an index into the group,
and the group keeps its sockets in the order they started listening. The
master binds one listener per worker slot, in slot order, and holds each for
life (only the newest slot is ever retired, and a leaving socket is replaced
by the group's last one, so nothing moves): slot ``i``'s listener is index
``i``. ``steer`` builds ``rxhash % len(allowed)`` followed by a table that
maps the k-th value to the k-th allowed slot, so any set of slots can be
skipped. An index the group does not have (a program out of date) makes the
kernel fall back to its own hash, never drops the connection.

The master steers away from two kinds of slot:

* a slot being retired (TTOU). Linux resets every connection still queued
  on a reuseport listener when it closes (unless ``net.ipv4.tcp_migrate_req``
  is on, a host-wide setting we cannot assume), so before it closes no new
  connection may reach it; the retiring worker accepts until the kernel
  reports its accept queue empty (``TCP_INFO``'s ``tcpi_unacked`` is the queue
  length on a listener), and only then is the listener closed.
* a slot whose worker cannot accept: late with its heartbeat (a blocked
  event loop), dead, or not ready yet. Its queue would wait for that worker.

``stop_steering`` detaches the program, which returns the group to the
kernel's own hash.

Rule: imports nothing from the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
from collections.abc import Sequence

SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
_SKF_AD_OFF = -0x1000
_SKF_AD_RXHASH = 32
_BPF_LD_W_ABS = 0x00 | 0x00 | 0x20
_BPF_ALU_MOD_K = 0x04 | 0x90 | 0x00
_BPF_RET_A = 0x06 | 0x10
_BPF_RET_K = 0x06 | 0x00
_BPF_JEQ_K = 0x05 | 0x10 | 0x00
_BPF_MAX_INSNS = 4096  # BPF_MAXINSNS: 2 per slot, far above any worker count
_INSN = struct.Struct("HBBI")
_TCPI_UNACKED_OFFSET = 24  # after 8 one-byte fields and rto, ato, snd_mss, rcv_mss


def steer(sock: socket.socket, allowed: Sequence[int]) -> bool:
    """New connections of ``sock``'s group go only to the listeners at ``allowed``.

    ``allowed``: indices into the group (slot numbers), each listed once. An
    empty sequence is refused (False): a group must be able to accept.
    """
    if not allowed or len(set(allowed)) != len(allowed) or min(allowed) < 0:
        return False
    if 2 * len(allowed) + 1 > _BPF_MAX_INSNS:
        return False
    program = _program(list(allowed))
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // _INSN.size, ctypes.addressof(buffer))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError:
        return False
    return True


def steer_away_from_last(sock: socket.socket, keep: int) -> bool:
    """New connections of ``sock``'s group go to its first ``keep`` listeners only."""
    if keep < 1:
        return False
    return steer(sock, range(keep))


def _program(allowed: list[int]) -> bytes:
    """``A = rxhash % n``, then ``return allowed[A]``."""
    count = len(allowed)
    insns = [
        _INSN.pack(_BPF_LD_W_ABS, 0, 0, (_SKF_AD_OFF + _SKF_AD_RXHASH) & 0xFFFFFFFF),
        _INSN.pack(_BPF_ALU_MOD_K, 0, 0, count),
    ]
    if allowed == list(range(count)):
        insns.append(_INSN.pack(_BPF_RET_A, 0, 0, 0))  # the first n: A is the index
        return b"".join(insns)
    # One "if A == k return allowed[k]" pair per value but the last, which
    # is all that remains when every comparison failed.
    for k, index in enumerate(allowed[:-1]):
        insns.append(_INSN.pack(_BPF_JEQ_K, 0, 1, k))  # equal: next insn; else skip it
        insns.append(_INSN.pack(_BPF_RET_K, 0, 0, index))
    insns.append(_INSN.pack(_BPF_RET_K, 0, 0, allowed[-1]))
    return b"".join(insns)


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
