"""The master's multi-step operations, run one at a time.

Owns: ``Operation`` and its kinds: ``Reload`` (HUP: each slot in turn gets a
new worker, the old one is stopped once the new one is ready; a new worker
that dies before it is ready aborts the rest), ``Recycle`` (a worker reached
a limit), ``ScaleUp`` (TTIN) and ``ScaleDown`` (TTOU, with the reuseport
steering of ``master.reuseport``). The master calls ``start`` once, then
``on_ready``/``on_exit`` as its workers report, and ``poll`` every step;
an operation sets ``done`` when it is over.

Rule: imports nothing from the package but ``master.*``; the ``Master`` is
only a type here.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from app_server.logs import ERROR_LOGGER
from app_server.master import reuseport
from app_server.control import StopReason
from app_server.master.model import Phase, Worker, describe_exit

if TYPE_CHECKING:
    from app_server.master.arbiter import Master

log = logging.getLogger(ERROR_LOGGER)
DRAIN_QUEUE_MAX_S = 5.0  # longest wait for a retiring listener's queue to empty


class Operation:
    done = False

    def start(self, master: Master) -> None: ...

    def on_ready(self, master: Master, worker: Worker) -> None: ...

    def on_exit(self, master: Master, worker: Worker) -> None: ...

    def poll(self, master: Master, now: float) -> None:
        if self.done:
            master.current = None


class Reload(Operation):
    """HUP: each slot in turn gets a new worker; the old one stops once it is ready."""

    def start(self, master: Master) -> None:
        self.began = time.monotonic()
        self.pending = list(master.slots)
        self.waiting: Worker | None = None
        self.count = len(self.pending)
        if master.notifier is not None:
            master.notifier.reloading()
        self._next(master)

    def _next(self, master: Master) -> None:
        while self.pending:
            slot = self.pending.pop(0)
            if slot.retiring or slot not in master.slots:
                continue
            if slot.successor is not None or slot.worker is None:
                continue  # already being replaced, or respawning (with the new code)
            self.waiting = master.start_successor(slot)
            return
        self._finish(master, None)

    def on_ready(self, master: Master, worker: Worker) -> None:
        if worker is self.waiting:
            self.waiting = None
            self._next(master)

    def on_exit(self, master: Master, worker: Worker) -> None:
        if worker is self.waiting:
            self.waiting = None
            reason = describe_exit(worker.exit_code)
            self._finish(master, f"the new worker for slot {worker.slot.index} failed "
                                 f"to start ({reason}); the running workers keep serving")

    def _finish(self, master: Master, failure: str | None) -> None:
        took = time.monotonic() - self.began
        if failure is None:
            log.info("reload complete: %d workers replaced in %.2fs", self.count, took)
        else:
            log.error("reload aborted: %s", failure)
        if master.metrics is not None:
            master.metrics.reloaded(failure is None)
        if master.notifier is not None and master.stopping is None:
            status = "reload failed: " + failure if failure else master._status_line()
            master.notifier.ready(status)
        self.done = True


class Recycle(Operation):
    """A worker reached a limit: its replacement starts, then it stops (1012)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.waiting: Worker | None = None

    def start(self, master: Master) -> None:
        slot = self.worker.slot
        if (self.worker.pid not in master.workers or slot.worker is not self.worker
                or slot.successor is not None or slot.retiring):
            self.done = True
            return
        self.waiting = master.start_successor(slot)

    def on_ready(self, master: Master, worker: Worker) -> None:
        if worker is self.waiting:
            self.done = True

    def on_exit(self, master: Master, worker: Worker) -> None:
        if worker is self.waiting:
            if master.stopping is None:
                log.error("the replacement of worker %d failed to start; it keeps serving",
                          self.worker.pid)
            self.worker.recycling = False
            self.done = True


class ScaleUp(Operation):
    def start(self, master: Master) -> None:
        try:
            slot = master._add_slot(len(master.slots))
        except OSError as exc:
            log.error("TTIN: cannot add a worker: %s", exc)
            self.done = True
            return
        self.worker = slot.worker
        log.info("TTIN: %d workers", len(master.slots))

    def on_ready(self, master: Master, worker: Worker) -> None:
        if worker is self.worker:
            self.done = True

    def on_exit(self, master: Master, worker: Worker) -> None:
        if worker is self.worker:
            self.done = True  # the slot respawns it like any other


class ScaleDown(Operation):
    """TTOU: retire the newest slot without resetting a queued connection."""

    def start(self, master: Master) -> None:
        if len(master.slots) <= 1:
            log.warning("TTOU ignored: one worker is the minimum")
            self.done = True
            return
        self.slot = master.retire_last_slot()
        # The retiring slot is the last of the group: steering skips it from now.
        if self.slot.sockets and not master.update_cover():
            log.warning("TTOU: cannot steer connections away from the retiring listener; "
                        "connections queued on it at close may be reset")
        self.began = time.monotonic()
        self.empty_since: float | None = None
        log.info("TTOU: retiring slot %d", self.slot.index)

    def poll(self, master: Master, now: float) -> None:
        if self.done:
            master.current = None
            return
        slot = self.slot
        if slot.worker is not None and slot.worker.phase is Phase.STOPPING:
            return  # told to stop: waiting for it to exit (on_exit)
        if slot.sockets and slot.worker is not None and slot.worker.phase is Phase.READY:
            # Let the worker accept whatever was queued before the steering.
            queued = max(reuseport.accept_queue_length(s) for s in slot.sockets)
            if queued > 0 and now - self.began < DRAIN_QUEUE_MAX_S:
                self.empty_since = None
                return
            if self.empty_since is None:
                self.empty_since = now
            if now - self.empty_since < 0.05 and now - self.began < DRAIN_QUEUE_MAX_S:
                return
        elif slot.worker is not None and slot.worker.phase is Phase.BOOTING:
            return  # wait until it can accept its queue
        worker = slot.worker
        master._count_restart("scale")
        # Close our copy first: the worker's close then ends the listener.
        for sock in slot.sockets:
            sock.close()
        if worker is None:
            self._gone(master)
        else:
            master._stop_worker(worker, StopReason.SCALE_DOWN)

    def on_exit(self, master: Master, worker: Worker) -> None:
        slot = getattr(self, "slot", None)
        if slot is not None and worker.slot is slot and slot.worker is None and not self.done:
            self._gone(master)

    def _gone(self, master: Master) -> None:
        if self.slot in master.slots:
            master.slots.remove(self.slot)
        master.update_cover()  # the steering that skipped it goes
        log.info("TTOU: %d workers", len(master.slots))
        self.done = True
