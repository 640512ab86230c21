"""What the master knows about its workers and listeners.

Owns: ``Phase``, ``Worker`` and ``Slot`` (the master's records of its
children and their stable slots), ``Listeners`` (the sockets it holds),
``describe_exit`` and the reserved
exit code ``EXIT_BOOT_FAILED``.

Rule: imports nothing from the package but ``control``,
``master.listeners`` and ``settings.model``.
"""

from __future__ import annotations

import signal
import socket
from dataclasses import dataclass, field
from enum import Enum

from app_server.control import RecycleReason
from app_server.master.listeners import DEFAULT_BACKLOG, bind_listener
from app_server.settings.model import BindSpec

EXIT_BOOT_FAILED = 3  # a worker whose application could not be imported or booted


RECYCLE_LABELS = {
    RecycleReason.MAX_REQUESTS: "max_requests",
    RecycleReason.MAX_LIFETIME: "max_lifetime",
    RecycleReason.MAX_MEMORY: "memory",
    RecycleReason.DRAIN: "drain",
}


class Phase(Enum):
    BOOTING = "booting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(eq=False)
class Worker:
    pid: int
    slot: Slot
    channel: socket.socket
    started: float
    phase: Phase = Phase.BOOTING
    last_seen: float = 0.0
    late: bool = False  # ready, but no heartbeat for control.late_after(--timeout)
    deadline_kill: float = float("inf")
    aborted: bool = False
    recycle_at: float = float("inf")  # --max-lifetime
    recycling: bool = False
    recycle_reason: RecycleReason | None = None
    exit_code: int | None = None
    # What its last heartbeat said (``ctl status``): served so far, open now.
    requests: int = 0
    http_connections: int = 0
    websockets: int = 0


@dataclass(eq=False)
class Slot:
    index: int
    sockets: list[socket.socket]  # this slot's own SO_REUSEPORT listeners
    worker: Worker | None = None  # the one serving (or booting to serve)
    successor: Worker | None = None  # a replacement waiting to be ready
    fast_deaths: int = 0
    respawn_at: float | None = None
    retiring: bool = False
    adopter: Worker | None = None  # another worker lent this slot's listeners


@dataclass
class Listeners:
    """The sockets the master holds: per-slot reuseport listeners and shared ones."""

    shared: list[socket.socket]
    per_slot_binds: tuple[BindSpec, ...]  # TCP binds with their real port, one socket per slot
    first_slot: list[socket.socket] = field(default_factory=list)
    backlog: int = DEFAULT_BACKLOG  # --backlog: every listener bound here, first to last

    def for_new_slot(self, index: int) -> list[socket.socket]:
        if index == 0 and self.first_slot:
            sockets, self.first_slot = self.first_slot, []
            return sockets
        return [
            bind_listener(b, reuse_port=True, backlog=self.backlog) for b in self.per_slot_binds
        ]


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    if code == EXIT_BOOT_FAILED:
        return "exit 3: the application failed to boot"
    return f"exit {code}"
