"""The master's multi-step operations: pure state machines, run one at a time.

Owns: ``Operation`` and its kinds: ``Reload`` (HUP: each slot in turn gets a
new worker, the old one is stopped once the new one is ready; a new worker
that dies before it is ready aborts the rest), ``Recycle`` (a worker reached
a limit), ``ScaleUp`` (TTIN) and ``ScaleDown`` (TTOU: steer new connections
away from the newest slot, let its worker accept what was already queued,
then stop it).

An operation is fed events (``master.actions``) with a ``MasterView`` and
returns the actions the loop carries out; it never calls the master, never
touches a socket or the clock (the time comes in the view), and never
changes a record. Finishing is an action too (``Finished``). So each one is
driven in unit tests by plain values, without forking.

A replacement is recognised without being told its pid: it is the worker of
the slot being replaced that is not the worker being replaced (while a
successor boots the slot is never respawned, so no other worker can appear).

Rule: imports nothing from the package but ``master.actions``,
``master.model`` and ``control``.
"""

from __future__ import annotations

import logging

from app_server.control import StopReason
from app_server.master.actions import (
    FINISHED,
    Action,
    AddSlot,
    CloseListeners,
    CountRestart,
    Event,
    MasterView,
    NotifyReloading,
    RecycleFailed,
    ReloadEnded,
    RemoveSlot,
    RetireSlot,
    SpawnSuccessor,
    Started,
    StopWorker,
    Tick,
    WorkerExited,
    WorkerReady,
)
from app_server.master.model import Phase, Slot, Worker, describe_exit

log = logging.getLogger("app_server.error")
DRAIN_QUEUE_MAX_S = 5.0  # longest wait for a retiring listener's queue to empty
QUEUE_QUIET_S = 0.05  # an empty queue must stay empty this long (a connection in flight)


class Operation:
    """Dispatches an event to the handler of its kind; by default ignores it."""

    def handle(self, event: Event, view: MasterView) -> list[Action]:
        if isinstance(event, Started):
            return self.start(view)
        if isinstance(event, WorkerReady):
            return self.on_ready(event.worker, view)
        if isinstance(event, WorkerExited):
            return self.on_exit(event.worker, view)
        if isinstance(event, Tick):
            return self.on_tick(event, view)
        return self.on_add_failed()

    def start(self, view: MasterView) -> list[Action]:
        return [FINISHED]

    def on_ready(self, worker: Worker, view: MasterView) -> list[Action]:
        return []

    def on_exit(self, worker: Worker, view: MasterView) -> list[Action]:
        return []

    def on_tick(self, tick: Tick, view: MasterView) -> list[Action]:
        return []

    def on_add_failed(self) -> list[Action]:
        return []


class _Replacing(Operation):
    """Waits for the successor of one slot's worker at a time."""

    def __init__(self) -> None:
        self.slot: Slot | None = None  # whose successor we wait for
        self.old: Worker | None = None

    def _replace(self, slot: Slot) -> list[Action]:
        self.slot, self.old = slot, slot.worker
        return [SpawnSuccessor(slot)]

    def _is_successor(self, worker: Worker) -> bool:
        return self.slot is not None and worker.slot is self.slot and worker is not self.old


class Reload(_Replacing):
    """HUP: each slot in turn gets a new worker; the old one stops once it is ready."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Slot] = []
        self.began = 0.0
        self.count = 0
        self.retired: list[Worker] = []  # the old workers told to stop, in order

    def start(self, view: MasterView) -> list[Action]:
        self.began = view.now
        self.pending = list(view.slots)
        self.count = len(self.pending)
        return [NotifyReloading(), *self._next(view)]

    def _next(self, view: MasterView) -> list[Action]:
        self.slot = self.old = None
        while self.pending:
            slot = self.pending.pop(0)
            if slot.retiring or slot not in view.slots:
                continue
            if slot.successor is not None or slot.worker is None:
                continue  # already being replaced, or respawning (with the new code)
            return self._replace(slot)
        return self._end(view, None)

    def on_ready(self, worker: Worker, view: MasterView) -> list[Action]:
        if not self._is_successor(worker):
            return []
        if self.old is not None:
            self.retired.append(self.old)  # its successor took over: it drains and exits
        return self._next(view)

    def on_exit(self, worker: Worker, view: MasterView) -> list[Action]:
        if not self._is_successor(worker):
            return []
        self.slot = None
        return self._end(
            view,
            f"the new worker for slot {worker.slot.index} failed to "
            f"start ({describe_exit(worker.exit_code)}); the running "
            "workers keep serving",
        )

    def _end(self, view: MasterView, failure: str | None) -> list[Action]:
        return [
            ReloadEnded(self.count, view.now - self.began, failure, tuple(self.retired)),
            FINISHED,
        ]


class Recycle(_Replacing):
    """A worker reached a limit: its replacement starts, then it stops (1012)."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def start(self, view: MasterView) -> list[Action]:
        slot = self.worker.slot
        if (
            self.worker.exit_code is not None
            or slot.worker is not self.worker
            or slot.successor is not None
            or slot.retiring
        ):
            return [FINISHED]  # it died, or is being replaced already, meanwhile
        return self._replace(slot)

    def on_ready(self, worker: Worker, view: MasterView) -> list[Action]:
        return [FINISHED] if self._is_successor(worker) else []

    def on_exit(self, worker: Worker, view: MasterView) -> list[Action]:
        if not self._is_successor(worker):
            return []
        return [RecycleFailed(self.worker, quiet=view.stopping), FINISHED]


class ScaleUp(Operation):
    """TTIN: one slot more; over once its first worker is ready (or died: it respawns)."""

    def __init__(self) -> None:
        self.index = -1

    def start(self, view: MasterView) -> list[Action]:
        self.index = len(view.slots)
        return [AddSlot()]

    def on_ready(self, worker: Worker, view: MasterView) -> list[Action]:
        return [FINISHED] if worker.slot.index == self.index else []

    def on_exit(self, worker: Worker, view: MasterView) -> list[Action]:
        return [FINISHED] if worker.slot.index == self.index else []

    def on_add_failed(self) -> list[Action]:
        return [FINISHED]


class ScaleDown(Operation):
    """TTOU: retire the newest slot without resetting a queued connection.

    Retiring steers new connections away from the slot; its worker keeps
    accepting until the listeners' queue (read by the loop, ``Tick.queued``)
    has stayed empty for ``QUEUE_QUIET_S``, or ``DRAIN_QUEUE_MAX_S`` passed.
    Then the master's copy of the listeners is closed and the worker is
    stopped; its close ends the listeners. The slot goes when it has exited.
    """

    def __init__(self) -> None:
        self.slot: Slot | None = None
        self.began = 0.0
        self.empty_since: float | None = None
        self.closed = False

    def start(self, view: MasterView) -> list[Action]:
        if len(view.slots) <= 1:
            log.warning("TTOU ignored: one worker is the minimum")
            return [FINISHED]
        self.slot = view.slots[-1]
        self.began = view.now
        return [RetireSlot(self.slot)]

    def on_tick(self, tick: Tick, view: MasterView) -> list[Action]:
        slot = self.slot
        if slot is None or self.closed or self._waits(slot, tick, view.now):
            return []
        self.closed = True
        actions: list[Action] = [CountRestart("scale"), CloseListeners(slot)]
        if slot.worker is None:
            return [*actions, RemoveSlot(slot), FINISHED]
        return [*actions, StopWorker(slot.worker, StopReason.SCALE_DOWN)]

    def _waits(self, slot: Slot, tick: Tick, now: float) -> bool:
        worker = slot.worker
        if worker is None:
            return False
        if worker.phase is Phase.BOOTING:
            return True  # wait until it can accept its queue
        if worker.phase is not Phase.READY or not slot.sockets:
            return worker.phase is Phase.STOPPING
        if now - self.began >= DRAIN_QUEUE_MAX_S:
            return False
        if tick.queued.get(slot.index, 0) > 0:
            self.empty_since = None
            return True
        if self.empty_since is None:
            self.empty_since = now
        return now - self.empty_since < QUEUE_QUIET_S

    def on_exit(self, worker: Worker, view: MasterView) -> list[Action]:
        slot = self.slot
        if slot is None or worker.slot is not slot or slot.worker is not None:
            return []
        return [RemoveSlot(slot), FINISHED]
