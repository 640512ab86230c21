"""Plain master records for the pure-operation and policy tests (no fork, no socket)."""

from __future__ import annotations

import socket
from typing import cast

from app_server.master.actions import MasterView
from app_server.master.model import Phase, Slot, Worker

# The pure code never touches a socket; a placeholder object stands in for one.
NO_SOCKET = cast(socket.socket, object())


def make_slots(count: int, listeners: bool = True) -> list[Slot]:
    return [Slot(i, [NO_SOCKET] if listeners else []) for i in range(count)]


def worker(
    slot: Slot, pid: int, phase: Phase = Phase.READY, started: float = 0.0, serving: bool = True
) -> Worker:
    """A worker of ``slot``; ``serving``: it is the slot's worker (else just a record)."""
    record = Worker(pid, slot, NO_SOCKET, started, phase=phase, last_seen=started)
    if serving:
        slot.worker = record
    return record


def view(slots: list[Slot], now: float = 0.0, stopping: bool = False) -> MasterView:
    return MasterView(tuple(slots), stopping, now)


def promote(successor: Worker) -> None:
    """What the loop does when a successor is READY: it becomes the slot's worker."""
    successor.phase = Phase.READY
    successor.slot.worker, successor.slot.successor = successor, None


def exited(record: Worker, code: int) -> Worker:
    """What the loop does when a worker is reaped."""
    record.exit_code = code
    slot = record.slot
    if slot.successor is record:
        slot.successor = None
    elif slot.worker is record:
        slot.worker = None
    return record
