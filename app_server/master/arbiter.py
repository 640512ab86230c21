"""The master process: a thin loop that forks workers and carries out decisions.

Owns: ``Master``, its single-threaded loop and the records it keeps (the
slot table and every live child), plus the pid file helpers. The master
never imports the application (unless ``--preload``) and never serves a
request. It holds every listener for its whole life: with SO_REUSEPORT one
set per worker slot, so a replacement accepts from the very socket its
predecessor did and no queued connection is reset; otherwise one shared set.

Each step waits on a selector (the workers' control channels, the signal
inbox's self-pipe, and components such as the metrics endpoint, each
registered with a callback) until the next deadline, then: drains signals,
reaps children, and turns what happened into events. The decisions are
elsewhere and pure: ``master.operations`` (reload on HUP or changed
sources, recycle, scale on TTIN/TTOU, one at a time, in order) returns
actions that ``_carry_out`` executes; ``master.policies`` says when to
respawn and with what backoff, when a silent worker is late, hung or past
its kill deadline, when to recycle, and which slots to cover (steer away
from and lend to another worker, ``master.cover``). TERM/INT: STOP(shutdown)
to every worker, exit once they are gone; a second one or QUIT:
STOP(immediate). USR1: reopen log files here and in every worker.

Rule: never imports the framework, the protocols or the worker runtime (the
code a child runs is handed in as ``spawn_target``), nor a metrics
implementation (``cli`` passes a ``metrics.sink.MasterMetrics``).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable

from app_server import control
from app_server.control import Kind, RecycleReason, StopReason
from app_server.logs import ERROR_LOGGER, reopen_log_files
from app_server.master import policies, process, reuseport
from app_server.master.actions import (
    Action, AddSlot, AddSlotFailed, CloseListeners, CountRestart, Event, Finished, MasterView,
    NotifyReloading, RecycleFailed, ReloadEnded, RemoveSlot, RetireSlot, SpawnSuccessor,
    Started, StopWorker, Tick, WorkerExited, WorkerReady,
)
from app_server.master.cover import Cover
from app_server.master.model import RECYCLE_LABELS, Listeners, Phase, Slot, Worker, describe_exit
from app_server.master.operations import Operation, Recycle, Reload, ScaleDown, ScaleUp
from app_server.master.policies import Verdict
from app_server.master.scrape import Scrape
from app_server.master.systemd import Notifier
from app_server.master.watch import SourceWatcher
from app_server.metrics.sink import MasterMetrics, NullMasterMetrics
from app_server.settings.model import SupervisorSettings

log = logging.getLogger(ERROR_LOGGER)
SpawnTarget = Callable[[int, list[socket.socket], socket.socket, int], int]
MEMORY_CHECK_S = 1.0
WATCH_INTERVAL_S = 1.0  # --reload: how often the sources are looked at
_OPERATIONS = {signal.SIGHUP: Reload, signal.SIGTTIN: ScaleUp, signal.SIGTTOU: ScaleDown}


class Master:
    def __init__(
        self, settings: SupervisorSettings, graceful_timeout_s: float, listeners: Listeners,
        spawn_target: SpawnTarget, notifier: Notifier | None = None,
        watchdog_s: float | None = None, watch_dir: str | None = None,
        metrics_listener: socket.socket | None = None, metrics: MasterMetrics | None = None,
    ) -> None:
        self.settings, self.graceful_s, self.listeners = settings, graceful_timeout_s, listeners
        self.spawn_target, self.notifier, self.watchdog_s = spawn_target, notifier, watchdog_s
        self.deadlines = policies.Deadlines(settings.timeout_s, control.late_after(settings.timeout_s))
        self.slots: list[Slot] = []
        self.workers: dict[int, Worker] = {}  # pid -> worker, every live child
        self.selector = selectors.DefaultSelector()
        self.inbox = process.SignalInbox()
        self.operations: deque[Operation] = deque()
        self.current: Operation | None = None
        self.cover = Cover()
        self.first_ready = False
        self.stopping: StopReason | None = None
        self.stop_deadline = float("inf")
        self.exit_code = 0
        self.next_memory_check = self.next_watchdog = self.next_watch = 0.0
        self.watcher = SourceWatcher(watch_dir) if watch_dir is not None else None
        self.metrics = metrics if metrics is not None else NullMasterMetrics()
        self.metrics_listener = metrics_listener
        self.scrape: Scrape | None = None
        self._packet_buffer = bytearray(control.MAX_PACKET)  # one packet is one message

    @property
    def is_stopping(self) -> bool:
        return self.stopping is not None

    def run(self) -> int:
        self.inbox.install(self.selector)
        if self.metrics_listener is not None:
            self.scrape = Scrape(self, self.metrics, self.metrics_listener, self.selector)
            log.info("metrics on http://%s:%d/metrics (/healthz, /readyz)", *self.scrape.server.address)
        try:
            for index in range(self.settings.workers):
                self._add_slot(index)
            if self.notifier is not None:
                self.notifier.status(f"starting {self.settings.workers} workers")
            while not (self.stopping is not None and not self.workers):
                self._step()
        finally:
            self.inbox.restore()
            self._close_all()
        if self.notifier is not None:
            self.notifier.close()
        return self.exit_code

    def _step(self) -> None:
        now = time.monotonic()
        wakeup = min(policies.next_wakeup(self.workers.values(), self.slots, self.deadlines, now),
                     self.next_watchdog if self.watchdog_s else now + 0.5, self.stop_deadline,
                     self.scrape.deadline if self.scrape is not None else now + 0.5)
        for key, mask in self.selector.select(max(0.0, wakeup - now)):
            if key.data is self.inbox:
                self.inbox.drain_wakeups()
            elif isinstance(key.data, Worker):
                self._read_channel(key.data)
            else:
                key.data(mask)  # a component's socket, e.g. the metrics endpoint's
        while self.inbox.pending:
            self._on_signal(self.inbox.pending.popleft())
        for pid, code, cpu_s in process.reap():
            self._on_reaped(pid, code, cpu_s)
        self._tick(time.monotonic())

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGQUIT:
            log.info("QUIT: immediate shutdown")
            self._shutdown(StopReason.IMMEDIATE)
        elif sig in (signal.SIGTERM, signal.SIGINT):
            name, again = signal.Signals(sig).name, self.stopping is not None
            if again:
                log.warning("%s again: stopping now", name)
            else:
                log.info("%s: graceful shutdown", name)
            self._shutdown(StopReason.IMMEDIATE if again else StopReason.SHUTDOWN)
        elif self.stopping is not None or sig == signal.SIGCHLD:
            return  # SIGCHLD: children are reaped in every step
        elif sig in _OPERATIONS:
            if sig == signal.SIGHUP:
                log.info("HUP: rolling reload of %d workers", len(self.slots))
            self.operations.append(_OPERATIONS[sig]())
        elif sig == signal.SIGUSR1:
            reopen_log_files()
            for worker in list(self.workers.values()):
                process.kill(worker.pid, signal.SIGUSR1)

    # -- workers -----------------------------------------------------------------

    def _add_slot(self, index: int) -> Slot:
        slot = Slot(index, self.listeners.for_new_slot(index))
        self.slots.append(slot)
        slot.worker = self._spawn(slot)
        return slot

    def _spawn(self, slot: Slot) -> Worker:
        master_end, worker_end = control.channel_pair()
        settings = self.settings
        requests = policies.max_requests(settings.max_requests, settings.max_requests_jitter,
                                         random.randint(0, max(0, settings.max_requests_jitter)))
        pid = process.fork_child(lambda: self.spawn_target(
            slot.index, self._become_child(slot), worker_end, requests))
        worker_end.close()
        now = time.monotonic()
        worker = Worker(pid, slot, master_end, now, last_seen=now)
        worker.recycle_at = policies.lifetime_end(
            now, settings.max_lifetime_s, random.uniform(0, settings.max_lifetime_jitter_s))
        self.workers[pid] = worker
        self.selector.register(master_end, selectors.EVENT_READ, worker)
        log.info("worker %d booting (slot %d)", pid, slot.index)
        return worker

    def _become_child(self, slot: Slot) -> list[socket.socket]:
        """In the forked child: drop the master's state, keep this slot's sockets."""
        self.inbox.restore()
        self.inbox.close()
        self.selector.close()
        for worker in self.workers.values():
            worker.channel.close()
        for other in self.slots:
            if other is not slot:
                for sock in other.sockets:
                    sock.close()
        if self.notifier is not None:
            self.notifier.close()
        if self.scrape is not None:
            self.scrape.close_in_child()
        return slot.sockets + self.listeners.shared

    def _read_channel(self, worker: Worker) -> None:
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
            if message.kind is Kind.READY:
                self._on_ready(worker)
            elif message.kind is Kind.RECYCLE:
                self._recycle(worker, RecycleReason(message.code))
            elif message.kind is Kind.STATS:
                self.metrics.update(worker.pid, message.payload)
                if self.scrape is not None:
                    self.scrape.on_stats(worker.pid, message.code)

    def _receive(self, channel: socket.socket) -> bytes:
        # Into one preallocated buffer: a packet may be a 4 MiB snapshot, and
        # heartbeats come four times a second from every worker.
        return bytes(self._packet_buffer[:channel.recv_into(self._packet_buffer)])

    def _unregister(self, channel: socket.socket) -> None:
        try:
            self.selector.unregister(channel)
        except (KeyError, ValueError):
            pass

    def _on_ready(self, worker: Worker) -> None:
        if worker.phase is not Phase.BOOTING:
            return
        worker.phase, slot = Phase.READY, worker.slot
        log.info("worker %d ready (slot %d)", worker.pid, slot.index)
        if slot.successor is worker:
            old, slot.worker, slot.successor = slot.worker, worker, None
            if old is not None:
                recycled = old.recycling and old.recycle_reason is not None
                self.metrics.restarted(RECYCLE_LABELS[old.recycle_reason] if recycled
                                       and old.recycle_reason else "reload")
                self._stop_worker(old, StopReason.RECYCLE if old.recycling else StopReason.RELOAD)
        self._dispatch(WorkerReady(worker))
        if not self.first_ready and policies.all_ready(self.slots):
            self.first_ready = True
            log.info("all %d workers ready", len(self.slots))
            if self.notifier is not None:
                self.notifier.ready(self._status_line())

    def _stop_worker(self, worker: Worker, reason: StopReason) -> None:
        if worker.phase is Phase.STOPPING and reason is not StopReason.IMMEDIATE:
            return
        worker.phase, worker.recycle_at = Phase.STOPPING, float("inf")
        worker.deadline_kill = min(worker.deadline_kill,
                                   time.monotonic() + policies.stop_grace(reason, self.graceful_s))
        try:
            worker.channel.send(control.encode(Kind.STOP, reason))
        except OSError:
            immediate = reason is StopReason.IMMEDIATE
            process.kill(worker.pid, signal.SIGQUIT if immediate else signal.SIGTERM)

    def _on_reaped(self, pid: int, code: int, cpu_s: float) -> None:
        worker = self.workers.pop(pid, None)
        if worker is None:
            return
        worker.exit_code = code
        self._read_channel(worker)  # what it said last (its final metrics) is still there
        self._unregister(worker.channel)
        worker.channel.close()
        self.metrics.worker_gone(pid, worker.slot.index, cpu_s)
        if self.scrape is not None:
            self.scrape.answered(pid)
        slot, how = worker.slot, describe_exit(code)
        if worker.phase is Phase.STOPPING:
            log.info("worker %d (slot %d) stopped (%s)", pid, slot.index, how)
        else:
            log.error("worker %d (slot %d) died (%s)%s", pid, slot.index, how,
                      " before it was ready" if worker.phase is Phase.BOOTING else "")
        if slot.successor is worker:
            slot.successor = None
        elif slot.worker is worker:
            slot.worker = None
            if self.stopping is None and not slot.retiring:
                self._schedule_respawn(worker)
        self._dispatch(WorkerExited(worker))

    def _schedule_respawn(self, worker: Worker) -> None:
        if policies.gives_up(self.first_ready, worker.exit_code):
            log.error("the application failed to boot: stopping (exit %d)", worker.exit_code)
            self.exit_code = worker.exit_code or 1
            self._shutdown(StopReason.IMMEDIATE)
            return
        self.metrics.restarted("crash")
        slot, now = worker.slot, time.monotonic()
        slot.fast_deaths, delay = policies.respawn_backoff(slot.fast_deaths, now - worker.started)
        if delay:
            log.warning("slot %d: workers keep dying at start; next in %.2fs", slot.index, delay)
        slot.respawn_at = now + delay

    # -- every step ------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        for slot in self.slots:
            if slot.respawn_at is not None and now >= slot.respawn_at and self.stopping is None:
                slot.respawn_at = None
                if slot.worker is None and slot.successor is None and not slot.retiring:
                    slot.worker = self._spawn(slot)
        for worker in list(self.workers.values()):
            for verdict in policies.check_worker(worker, now, self.deadlines):
                self._on_verdict(worker, verdict, now)
        if self.settings.max_memory_mb and now >= self.next_memory_check:
            self.next_memory_check = now + MEMORY_CHECK_S
            self._check_memory()
        if self.watchdog_s and now >= self.next_watchdog:
            self.next_watchdog = policies.next_period(self.next_watchdog, self.watchdog_s, now)
            if self.notifier is not None and policies.heartbeats_fresh(
                    self.slots, now, self.deadlines.timeout_s):
                self.notifier.watchdog()
        if self.watcher is not None and now >= self.next_watch and self.stopping is None:
            self.next_watch = now + WATCH_INTERVAL_S
            if self.watcher.changed() and not any(isinstance(o, Reload) for o in self.operations):
                log.info("source files changed: reloading")
                self.operations.append(Reload())
        if self.current is None and self.operations and self.stopping is None:
            self.current = self.operations.popleft()
            self._dispatch(Started())
        self._dispatch(Tick({s.index: max(reuseport.accept_queue_length(sock) for sock in s.sockets)
                             for s in self.slots if s.retiring and s.sockets
                             and all(sock.fileno() != -1 for sock in s.sockets)}))
        if self.scrape is not None:
            self.scrape.expire(now)
        if self.stopping is not None and now >= self.stop_deadline:
            for worker in list(self.workers.values()):
                process.kill(worker.pid, signal.SIGKILL)
            self.stop_deadline = float("inf")
        self.update_cover()

    def _on_verdict(self, worker: Worker, verdict: Verdict, now: float) -> None:
        slot, silent = worker.slot, now - worker.last_seen
        if verdict is Verdict.KILL:
            log.error("worker %d did not exit in time: SIGKILL", worker.pid)
            process.kill(worker.pid, signal.SIGKILL)
            worker.deadline_kill = float("inf")
        elif verdict is Verdict.LATE:
            worker.late = True
            log.warning("worker %d (slot %d) late: no heartbeat for %.2fs; its slot's "
                        "connections go to the other workers", worker.pid, slot.index, silent)
        elif verdict is Verdict.ABORT:
            limit = self.deadlines.timeout_s if worker.phase is Phase.READY \
                else self.deadlines.boot_timeout_s
            log.error("worker %d (slot %d) silent for %.1fs (timeout %ss): SIGABRT, its stacks "
                      "follow", worker.pid, slot.index, silent, limit)
            worker.aborted, worker.phase = True, Phase.STOPPING  # replaced, not stopped on purpose
            process.kill(worker.pid, signal.SIGABRT)
            worker.deadline_kill = now + policies.ABORT_GRACE_S
            if slot.worker is worker:
                self.metrics.restarted("timeout")
                slot.worker = None
                if self.stopping is None and not slot.retiring:
                    slot.respawn_at = now  # a new worker at once
        else:
            worker.recycle_at = float("inf")
            self._recycle(worker, RecycleReason.MAX_LIFETIME)

    def _check_memory(self) -> None:
        import psutil  # a dependency; imported when --max-memory is set

        for worker in policies.memory_candidates(self.slots):
            try:
                rss = psutil.Process(worker.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > self.settings.max_memory_mb * 1048576:
                log.warning("worker %d uses %d MiB (max-memory %d)", worker.pid,
                            rss // 1048576, self.settings.max_memory_mb)
                self._recycle(worker, RecycleReason.MAX_MEMORY)

    def _recycle(self, worker: Worker, reason: RecycleReason) -> None:
        if not policies.may_recycle(worker, self.stopping is not None):
            return
        worker.recycling, worker.recycle_reason = True, reason
        log.info("worker %d (slot %d): recycling (%s)", worker.pid, worker.slot.index,
                 reason.name.lower().replace("_", "-"))
        self.operations.append(Recycle(worker))

    def update_cover(self) -> bool:
        """Steer new connections away from slots that cannot accept; lend their listeners."""
        if self.stopping is not None:
            return True  # the listeners are closed or closing
        return self.cover.apply(self.slots, policies.plan_cover(self.slots, self.first_ready))

    # -- operations ------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        if self.current is not None:
            view = MasterView(tuple(self.slots), self.stopping is not None, time.monotonic())
            for action in self.current.handle(event, view):
                self._carry_out(action)

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, SpawnSuccessor):
            action.slot.successor = self._spawn(action.slot)
        elif isinstance(action, StopWorker):
            self._stop_worker(action.worker, action.reason)
        elif isinstance(action, AddSlot):
            self._add_slot_for_operation()
        elif isinstance(action, RetireSlot):
            action.slot.retiring = True
            log.info("TTOU: retiring slot %d", action.slot.index)
            # The retiring slot is the last of the group: steering skips it from now.
            if action.slot.sockets and not self.update_cover():
                log.warning("TTOU: cannot steer connections away from the retiring listener; "
                            "connections queued on it at close may be reset")
        elif isinstance(action, CloseListeners | RemoveSlot):
            for sock in action.slot.sockets:
                sock.close()  # ours first: the worker's close then ends the listener
            if isinstance(action, RemoveSlot) and action.slot in self.slots:
                self.slots.remove(action.slot)
                self.update_cover()  # the steering that skipped it goes
                log.info("TTOU: %d workers", len(self.slots))
        elif isinstance(action, CountRestart):
            self.metrics.restarted(action.reason)
        elif isinstance(action, NotifyReloading | ReloadEnded):
            self._notify_reload(action)
        elif isinstance(action, RecycleFailed):
            if not action.quiet:
                log.error("the replacement of worker %d failed to start; it keeps serving",
                          action.worker.pid)
            action.worker.recycling = False
        elif isinstance(action, Finished):
            self.current = None

    def _add_slot_for_operation(self) -> None:
        try:
            self._add_slot(len(self.slots))
        except OSError as exc:
            log.error("TTIN: cannot add a worker: %s", exc)
            self._dispatch(AddSlotFailed())
            return
        log.info("TTIN: %d workers", len(self.slots))

    def _notify_reload(self, action: NotifyReloading | ReloadEnded) -> None:
        if isinstance(action, NotifyReloading):
            if self.notifier is not None:
                self.notifier.reloading()
            return
        if action.failure is None:
            log.info("reload complete: %d workers replaced in %.2fs", action.replaced, action.took_s)
        else:
            log.error("reload aborted: %s", action.failure)
        self.metrics.reloaded(action.failure is None)
        if self.notifier is not None and self.stopping is None:
            self.notifier.ready("reload failed: " + action.failure if action.failure
                                else self._status_line())

    # -- stopping ----------------------------------------------------------------

    def _shutdown(self, reason: StopReason) -> None:
        if self.stopping is None:
            if self.notifier is not None:
                self.notifier.stopping("stopping")
            # New connections are refused from now on: close our listeners
            # (each worker closes its copy as it starts draining).
            self._close_listeners()
        self.stopping = reason
        grace = policies.stop_grace(reason, self.graceful_s)
        self.stop_deadline = min(self.stop_deadline, time.monotonic() + grace)
        for worker in list(self.workers.values()):
            self._stop_worker(worker, reason)

    def _close_listeners(self) -> None:
        for sock in [s for slot in self.slots for s in slot.sockets] + self.listeners.shared:
            sock.close()

    def _close_all(self) -> None:
        self._close_listeners()
        if self.scrape is not None:
            self.scrape.server.close()
        for worker in self.workers.values():
            worker.channel.close()
        self.selector.close()
        self.inbox.close()

    def _status_line(self) -> str:
        ready = sum(1 for w in self.workers.values() if w.phase is Phase.READY)
        return f"{ready} of {len(self.slots)} workers ready"


def write_pid_file(path: str) -> None:
    """Atomically: a reader sees the old content or the whole new pid, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid_file(path: str) -> None:
    """Remove the pid file if it is still ours."""
    try:
        with open(path) as handle:
            if handle.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot remove pid file %s: %s", path, exc)
