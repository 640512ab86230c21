"""The vocabulary between the master's loop and its pure parts: events in, actions out.

Owns: the events the loop feeds an operation (``Started``, ``WorkerReady``,
``WorkerExited``, ``Tick`` with the time and the accept-queue readings of
retiring slots, ``AddSlotFailed``), ``MasterView`` (the read-only facts an
operation may look at), and the actions an operation returns for the loop
to carry out (spawn a successor, stop a worker, add, retire or remove a
slot, count a restart, notify, finished). All frozen: an operation cannot
reach the loop's state through them, only ask.

Rule: imports nothing from the package but ``master.model`` and ``control``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app_server.control import StopReason
from app_server.master.model import Slot, Worker

# -- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MasterView:
    """What an operation may know of the master: its slots, whether it stops, the time."""

    slots: Sequence[Slot]
    stopping: bool
    now: float


@dataclass(frozen=True, slots=True)
class Started:
    """The operation's turn has come."""


@dataclass(frozen=True, slots=True)
class WorkerReady:
    worker: Worker


@dataclass(frozen=True, slots=True)
class WorkerExited:
    worker: Worker  # its exit_code is set


@dataclass(frozen=True, slots=True)
class Tick:
    """Every loop step. ``queued``: slot index -> connections waiting on its
    listeners, read by the loop for every retiring slot (TTOU drains them)."""

    queued: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AddSlotFailed:
    """The loop could not bind the new slot's listeners."""


Event = Started | WorkerReady | WorkerExited | Tick | AddSlotFailed

# -- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpawnSuccessor:
    """Fork a replacement into ``slot.successor``; it takes over once READY."""

    slot: Slot


@dataclass(frozen=True, slots=True)
class StopWorker:
    worker: Worker
    reason: StopReason


@dataclass(frozen=True, slots=True)
class AddSlot:
    """Bind one slot more and fork its worker (TTIN)."""


@dataclass(frozen=True, slots=True)
class RetireSlot:
    """Mark ``slot`` retiring: no respawn, and new connections are steered away."""

    slot: Slot


@dataclass(frozen=True, slots=True)
class CloseListeners:
    """Close the master's copy of ``slot``'s listeners (the worker's close ends them)."""

    slot: Slot


@dataclass(frozen=True, slots=True)
class RemoveSlot:
    """``slot`` is gone: drop it from the table, close what is left of it."""

    slot: Slot


@dataclass(frozen=True, slots=True)
class CountRestart:
    reason: str  # a restart reason of the metrics: reload, scale, crash, ...


@dataclass(frozen=True, slots=True)
class NotifyReloading:
    """Tell systemd a reload began (RELOADING=1)."""


@dataclass(frozen=True, slots=True)
class ReloadEnded:
    replaced: int
    took_s: float
    failure: str | None  # None: every slot got its new worker
    # The old workers this reload told to stop: ``ctl reload --wait`` answers
    # once every one of them has exited, not merely when the last new one is ready.
    retired: tuple[Worker, ...] = ()


@dataclass(frozen=True, slots=True)
class RecycleFailed:
    """The replacement of ``worker`` did not start: it keeps serving."""

    worker: Worker
    quiet: bool  # the master is stopping: not worth an error line


@dataclass(frozen=True, slots=True)
class Finished:
    """The operation is over; the next one may start."""


Action = (
    SpawnSuccessor
    | StopWorker
    | AddSlot
    | RetireSlot
    | CloseListeners
    | RemoveSlot
    | CountRestart
    | NotifyReloading
    | ReloadEnded
    | RecycleFailed
    | Finished
)
FINISHED = Finished()
