"""The master's worker processes and the slots they serve.

Owns: ``Children``, the slot table and every live child, and what is done
to them: fork a worker for a slot (the child drops the master's sockets and
keeps its slot's), read its control channel (any message is a sign of
life), mark it ready (a ready successor takes its slot over and the old
worker is told to stop), stop it (STOP, then a signal if the channel is
gone), forget it once reaped, respawn its slot with backoff, and carry out
``policies.check_worker``'s verdicts (late, abort as hung, kill). Which of
these to do, and when, is decided by ``master.policies``, the operations and
the loop (``master.arbiter``).

Rule: imports nothing from the package but ``control``, ``metrics.sink``,
``settings.model`` and ``master.*``.
"""

from __future__ import annotations

import logging
import random
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterator

from app_server import control
from app_server.control import Message, RecycleReason, StopReason
from app_server.master import policies, process, reuseport
from app_server.master.actions import (
    Action,
    CloseListeners,
    CountRestart,
    RecycleFailed,
    RemoveSlot,
    RetireSlot,
    SpawnSuccessor,
    StopWorker,
)
from app_server.master.model import RECYCLE_LABELS, Listeners, Phase, Slot, Worker, describe_exit
from app_server.master.policies import Deadlines, Verdict
from app_server.master.relay import Relay
from app_server.metrics.sink import MasterMetrics
from app_server.settings.model import SupervisorSettings

log = logging.getLogger("app_server.error")
# (slot, its listeners, the control channel, max requests, the channel relay socket or None)
SpawnTarget = Callable[[int, list[socket.socket], socket.socket, int, socket.socket | None], int]


class Children:
    def __init__(
        self,
        settings: SupervisorSettings,
        graceful_s: float,
        listeners: Listeners,
        spawn_target: SpawnTarget,
        selector: selectors.BaseSelector,
        metrics: MasterMetrics,
        in_child: Callable[[], None],
    ) -> None:
        self.settings, self.graceful_s, self.listeners = settings, graceful_s, listeners
        self.spawn_target, self.selector, self.metrics = spawn_target, selector, metrics
        self.deadlines = Deadlines(settings.timeout_s, control.late_after(settings.timeout_s))
        self.slots: list[Slot] = []
        self.workers: dict[int, Worker] = {}  # pid -> worker, every live child
        self.in_child = in_child  # the master's own cleanup in a forked child
        self._packet_buffer = bytearray(control.MAX_PACKET)  # one packet is one message
        self.relay: Relay | None = None  # the channel relay (``--channels master``)

    # -- forking -------------------------------------------------------------------------

    def add_slot(self, index: int) -> Slot:
        slot = Slot(index, self.listeners.for_new_slot(index))
        self.slots.append(slot)
        slot.worker = self.spawn(slot)
        return slot

    def spawn(self, slot: Slot) -> Worker:
        master_end, worker_end = control.channel_pair()
        relay_master, relay_worker = self.relay.pair() if self.relay is not None else (None, None)
        settings = self.settings
        requests = policies.max_requests(
            settings.max_requests,
            settings.max_requests_jitter,
            random.randint(0, max(0, settings.max_requests_jitter)),
        )
        pid = process.fork_child(
            lambda: self.spawn_target(
                slot.index, self._become_child(slot), worker_end, requests, relay_worker
            )
        )
        worker_end.close()
        if self.relay is not None and relay_master is not None and relay_worker is not None:
            relay_worker.close()
            self.relay.add(pid, relay_master)
        now = time.monotonic()
        worker = Worker(pid, slot, master_end, now, last_seen=now)
        worker.recycle_at = policies.lifetime_end(
            now, settings.max_lifetime_s, random.uniform(0, settings.max_lifetime_jitter_s)
        )
        self.workers[pid] = worker
        self.selector.register(master_end, selectors.EVENT_READ, worker)
        log.info("worker %d booting (slot %d)", pid, slot.index)
        return worker

    def _become_child(self, slot: Slot) -> list[socket.socket]:
        """In the forked child: drop the master's state, keep this slot's sockets."""
        self.in_child()
        self.selector.close()
        for worker in self.workers.values():
            worker.channel.close()
        if self.relay is not None:
            self.relay.close_in_child()
        for other in self.slots:
            if other is not slot:
                for sock in other.sockets:
                    sock.close()
        return slot.sockets + self.listeners.shared

    # -- talking -------------------------------------------------------------------------

    def messages(self, worker: Worker) -> Iterator[Message]:
        """Every message waiting on ``worker``'s channel; at EOF it is unregistered."""
        for packet in control.read_ready(lambda: self._receive(worker.channel), b""):
            if not packet:
                self._unregister(worker.channel)
                return  # the worker exited; reaping learns how
            try:
                message = control.decode(packet)
            except control.ControlError as exc:
                log.error("worker %d: %s", worker.pid, exc)
                continue
            worker.last_seen = time.monotonic()  # any message, a HEARTBEAT too, is a sign of life
            if worker.late:
                worker.late = False  # its slot is uncovered at the end of this step
                log.info("worker %d (slot %d) answers again", worker.pid, worker.slot.index)
            yield message

    def _receive(self, channel: socket.socket) -> bytes:
        # Into one preallocated buffer: a packet may be a 4 MiB snapshot, and
        # heartbeats come four times a second from every worker.
        return bytes(self._packet_buffer[: channel.recv_into(self._packet_buffer)])

    def _unregister(self, channel: socket.socket) -> None:
        try:
            self.selector.unregister(channel)
        except (KeyError, ValueError):
            pass

    def mark_ready(self, worker: Worker) -> bool:
        """READY: a successor takes its slot over. False if it was not booting."""
        if worker.phase is not Phase.BOOTING:
            return False
        worker.phase, slot = Phase.READY, worker.slot
        log.info("worker %d ready (slot %d)", worker.pid, slot.index)
        if slot.successor is worker:
            old, slot.worker, slot.successor = slot.worker, worker, None
            if old is not None:
                recycled = old.recycle_reason if old.recycling else None
                self.metrics.restarted(RECYCLE_LABELS[recycled] if recycled else "reload")
                self.stop(old, StopReason.RECYCLE if old.recycling else StopReason.RELOAD)
        return True

    def stop(self, worker: Worker, reason: StopReason) -> None:
        if worker.phase is Phase.STOPPING and reason is not StopReason.IMMEDIATE:
            return
        worker.phase, worker.recycle_at = Phase.STOPPING, float("inf")
        worker.deadline_kill = min(
            worker.deadline_kill, time.monotonic() + policies.stop_grace(reason, self.graceful_s)
        )
        try:
            worker.channel.send(control.encode(control.Kind.STOP, reason))
        except OSError:
            immediate = reason is StopReason.IMMEDIATE
            process.kill(worker.pid, signal.SIGQUIT if immediate else signal.SIGTERM)

    def stop_all(self, reason: StopReason) -> None:
        for worker in list(self.workers.values()):
            self.stop(worker, reason)

    def kill_all(self, sig: int) -> None:
        for worker in list(self.workers.values()):
            process.kill(worker.pid, sig)

    # -- exits and respawns -------------------------------------------------------------------

    def forget(self, worker: Worker, cpu_s: float) -> bool:
        """``worker`` was reaped (its last messages read): True if its slot lost its worker."""
        self.workers.pop(worker.pid, None)
        self._unregister(worker.channel)
        worker.channel.close()
        if self.relay is not None:
            self.relay.remove(worker.pid)
        self.metrics.worker_gone(worker.pid, worker.slot.index, cpu_s)
        slot, how = worker.slot, describe_exit(worker.exit_code)
        if worker.phase is Phase.STOPPING:
            log.info("worker %d (slot %d) stopped (%s)", worker.pid, slot.index, how)
        else:
            log.error(
                "worker %d (slot %d) died (%s)%s",
                worker.pid,
                slot.index,
                how,
                " before it was ready" if worker.phase is Phase.BOOTING else "",
            )
        if slot.successor is worker:
            slot.successor = None
        elif slot.worker is worker:
            slot.worker = None
            return not slot.retiring
        return False

    def schedule_respawn(self, worker: Worker) -> None:
        self.metrics.restarted("crash")
        slot, now = worker.slot, time.monotonic()
        slot.fast_deaths, delay = policies.respawn_backoff(slot.fast_deaths, now - worker.started)
        if delay:
            log.warning("slot %d: workers keep dying at start; next in %.2fs", slot.index, delay)
        slot.respawn_at = now + delay

    def respawn_due(self, now: float) -> None:
        for slot in self.slots:
            if slot.respawn_at is not None and now >= slot.respawn_at:
                slot.respawn_at = None
                if slot.worker is None and slot.successor is None and not slot.retiring:
                    slot.worker = self.spawn(slot)

    # -- silence ---------------------------------------------------------------------------

    def check(self, now: float, stopping: bool) -> list[Worker]:
        """Carry out every worker's verdicts; returns those due for a lifetime recycle."""
        due = []
        for worker in list(self.workers.values()):
            for verdict in policies.check_worker(worker, now, self.deadlines):
                if verdict is Verdict.RECYCLE:
                    worker.recycle_at = float("inf")
                    due.append(worker)
                else:
                    self._on_verdict(worker, verdict, now, stopping)
        return due

    def check_relay(self, now: float, stopping: bool) -> None:
        """A worker that has not read its relay socket for --timeout is hung: replace it."""
        if self.relay is None:
            return
        for pid in self.relay.stalled(now, self.deadlines.timeout_s):
            worker = self.workers.get(pid)
            self.relay.remove(pid)  # its queued deliveries go now: the master's memory
            if worker is None or worker.aborted or worker.phase is Phase.STOPPING:
                continue
            log.error(
                "worker %d (slot %d) has not read its channel messages for %ss",
                pid,
                worker.slot.index,
                self.deadlines.timeout_s,
            )
            self._on_verdict(worker, Verdict.ABORT, now, stopping)

    def _on_verdict(self, worker: Worker, verdict: Verdict, now: float, stopping: bool) -> None:
        slot, silent = worker.slot, now - worker.last_seen
        if verdict is Verdict.KILL:
            log.error("worker %d did not exit in time: SIGKILL", worker.pid)
            process.kill(worker.pid, signal.SIGKILL)
            worker.deadline_kill = float("inf")
        elif verdict is Verdict.LATE:
            worker.late = True
            log.warning(
                "worker %d (slot %d) late: no heartbeat for %.2fs; its slot's "
                "connections go to the other workers",
                worker.pid,
                slot.index,
                silent,
            )
        else:
            limit = (
                self.deadlines.timeout_s
                if worker.phase is Phase.READY
                else self.deadlines.boot_timeout_s
            )
            log.error(
                "worker %d (slot %d) silent for %.1fs (timeout %ss): SIGABRT, its stacks follow",
                worker.pid,
                slot.index,
                silent,
                limit,
            )
            worker.aborted, worker.phase = True, Phase.STOPPING  # replaced, not stopped on purpose
            process.kill(worker.pid, signal.SIGABRT)
            worker.deadline_kill = now + policies.ABORT_GRACE_S
            if slot.worker is worker:
                self.metrics.restarted("timeout")
                slot.worker = None
                if not stopping and not slot.retiring:
                    slot.respawn_at = now  # a new worker at once

    def mark_recycling(self, worker: Worker, reason: RecycleReason, stopping: bool) -> bool:
        """True if ``worker`` is now to be recycled (not when busy, or already)."""
        if not policies.may_recycle(worker, stopping):
            return False
        worker.recycling, worker.recycle_reason = True, reason
        log.info(
            "worker %d (slot %d): recycling (%s)",
            worker.pid,
            worker.slot.index,
            reason.name.lower().replace("_", "-"),
        )
        return True

    def over_memory(self) -> list[Worker]:
        import psutil  # a dependency; imported when --max-memory is set

        over = []
        for worker in policies.memory_candidates(self.slots):
            try:
                rss = psutil.Process(worker.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > self.settings.max_memory_mb * 1048576:
                log.warning(
                    "worker %d uses %d MiB (max-memory %d)",
                    worker.pid,
                    rss // 1048576,
                    self.settings.max_memory_mb,
                )
                over.append(worker)
        return over

    # -- an operation's actions on workers and slots ---------------------------------------

    def carry_out(self, action: Action) -> None:
        if isinstance(action, SpawnSuccessor):
            action.slot.successor = self.spawn(action.slot)
        elif isinstance(action, StopWorker):
            self.stop(action.worker, action.reason)
        elif isinstance(action, RetireSlot):
            action.slot.retiring = True
            log.info("TTOU: retiring slot %d", action.slot.index)
        elif isinstance(action, CloseListeners | RemoveSlot):
            for sock in action.slot.sockets:
                sock.close()  # ours first: the worker's close then ends the listener
            if isinstance(action, RemoveSlot) and action.slot in self.slots:
                self.slots.remove(action.slot)
                log.info("TTOU: %d workers", len(self.slots))
        elif isinstance(action, CountRestart):
            self.metrics.restarted(action.reason)
        elif isinstance(action, RecycleFailed):
            if not action.quiet:
                log.error(
                    "the replacement of worker %d failed to start; it keeps serving",
                    action.worker.pid,
                )
            action.worker.recycling = False
        else:
            raise ValueError(f"not an action on workers or slots: {action!r}")

    def queued_on_retiring(self) -> dict[int, int]:
        """The reading ``ScaleDown`` drains by: connections queued on retiring slots."""
        return {
            slot.index: max(reuseport.accept_queue_length(sock) for sock in slot.sockets)
            for slot in self.slots
            if slot.retiring and slot.sockets and all(sock.fileno() != -1 for sock in slot.sockets)
        }

    def close_listeners(self) -> None:
        for sock in [s for slot in self.slots for s in slot.sockets] + self.listeners.shared:
            sock.close()

    def status_line(self) -> str:
        ready = sum(1 for w in self.workers.values() if w.phase is Phase.READY)
        return f"{ready} of {len(self.slots)} workers ready"
