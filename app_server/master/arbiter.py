"""The master process: forks the workers, keeps them alive, reloads, scales, stops.

Owns: ``Master`` and its single-threaded loop. The master never imports the
application (unless ``--preload``) and never serves a request. It holds every
listener for its whole life: with SO_REUSEPORT one set per worker slot, so a
replacement worker accepts from the very socket its predecessor did and no
queued connection is ever reset; otherwise one shared set.

The loop waits on a selector (the control channels of the workers, a
self-pipe for signals and the metrics endpoint's sockets) with a timeout set
by the next deadline. Signal
handlers only record the signal; everything happens in the loop:

* HUP: rolling reload, one slot at a time (``operations.Reload``): start the
  replacement, wait for its READY, then send the old worker STOP(reload); a
  replacement that dies before READY aborts the reload and the old workers
  keep serving.
* TERM/INT: close the listeners, STOP(shutdown) to every worker, exit 0 once
  they are gone (a second TERM/INT or a QUIT: STOP(immediate)).
* TTIN/TTOU: one slot more / the newest slot retired (see ``reuseport``).
* USR1: reopen log files here and in every worker.
* a dead worker is replaced at once, with exponential backoff when workers
  of a slot keep dying right after they start; a worker silent for
  ``--timeout`` gets SIGABRT (it dumps its stacks), then SIGKILL;
  ``--max-requests`` (asked by the worker), ``--max-lifetime`` and
  ``--max-memory`` recycle a worker, its replacement started first.
* a slot whose worker cannot accept (a ready worker late with its heartbeat,
  which means a blocked event loop; a dead or aborted one; one not ready
  yet) is covered: the port's reuseport group is steered away from it
  (``reuseport.steer``) and another worker is lent its listeners (ADOPT), so
  neither new connections nor those already queued on it wait for it; both
  end (RELEASE, steering back) once the slot's worker accepts again.

Reloads, scaling and recycles are operations (``master.operations``) run
one at a time, in order. The master also answers ``/metrics`` (asking every
worker for a fresh snapshot first), ``/healthz`` and ``/readyz``.

Rule: never imports the framework, the protocols or the worker runtime; the
code a child runs after the fork is handed in as ``spawn_target``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import selectors
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from app_server.logs import ERROR_LOGGER, reopen_log_files
from app_server.master import control, reuseport
from app_server.master.control import Kind, RecycleReason, StopReason
from app_server.master.model import (
    EXIT_BOOT_FAILED,
    RECYCLE_LABELS,
    Listeners,
    Phase,
    Slot,
    Worker,
    WorkerView,
    describe_exit,
)
from app_server.master.operations import Operation, Recycle, Reload, ScaleDown, ScaleUp
from app_server.master.watch import SourceWatcher
from app_server.settings.model import SupervisorSettings

log = logging.getLogger(ERROR_LOGGER)

EXIT_OK = 0
SIGNALS = (
    signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD,
)
ABORT_GRACE_S = 1.0  # between SIGABRT (stack dump) and SIGKILL
STOP_GRACE_S = 5.0  # a stopped worker may outlive --graceful-timeout by this much
IMMEDIATE_GRACE_S = 3.0
FAST_DEATH_S = 5.0  # a worker dying sooner than this after start counts toward backoff
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 15.0
BOOT_TIMEOUT_MIN_S = 30.0
MEMORY_CHECK_S = 1.0
COLLECT_TIMEOUT_S = 0.5  # a scrape waits at most this long for the workers' snapshots
WATCH_INTERVAL_S = 1.0  # --reload: how often the sources are looked at
WATCHDOG_FRESH_S = 3.0  # WATCHDOG=1 only while every serving worker spoke this recently


SpawnTarget = Callable[[int, list[socket.socket], socket.socket, int], int]


class Master:
    def __init__(
        self,
        settings: SupervisorSettings,
        graceful_timeout_s: float,
        listeners: Listeners,
        spawn_target: SpawnTarget,
        notifier: Any = None,
        watchdog_s: float | None = None,
        watch_dir: str | None = None,
        metrics_listener: socket.socket | None = None,
    ) -> None:
        self.settings = settings
        self.graceful_s = graceful_timeout_s
        self.listeners = listeners
        self.spawn_target = spawn_target
        self.notifier = notifier
        self.watchdog_s = watchdog_s
        self.timeout_s = settings.timeout_s
        self.heartbeat_s = control.heartbeat_interval(self.timeout_s)
        self.late_s = control.late_after(self.timeout_s)
        # The slots (group indices) new connections go to; None: the kernel's hash.
        self.steering: tuple[int, ...] | None = None
        self.steering_ok = True
        self.slots: list[Slot] = []
        self.workers: dict[int, Worker] = {}  # pid -> worker, every live child
        self.selector = selectors.DefaultSelector()
        self.signals: deque[int] = deque()
        self.operations: deque[Operation] = deque()
        self.current: Operation | None = None
        self.first_ready = False
        self.stopping: StopReason | None = None
        self.stop_deadline = float("inf")
        self.exit_code = EXIT_OK
        self.next_memory_check = 0.0
        self.next_watchdog = 0.0
        self._wakeup_r = self._wakeup_w = -1
        self.watcher = SourceWatcher(watch_dir) if watch_dir is not None else None
        self.next_watch = 0.0
        self.metrics_listener = metrics_listener
        self.metrics: Any = None  # MetricsStore, when metrics are on
        self.metrics_server: Any = None
        self.collect_waiting: set[int] = set()
        self.collect_round = 0
        # One packet is one message; a metrics snapshot can be large.
        self._packet_buffer = bytearray(control.MAX_PACKET)
        self.collect_deadline = float("inf")

    # -- the loop ----------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        if self.metrics_listener is not None:
            self._start_metrics(self.metrics_listener)
        try:
            for index in range(self.settings.workers):
                self._add_slot(index)
            self._status(f"starting {self.settings.workers} workers")
            while not (self.stopping is not None and not self.workers):
                self._step()
        finally:
            self._restore_signals()
            self._close_all()
        if self.notifier is not None:
            self.notifier.close()
        return self.exit_code

    def _step(self) -> None:
        now = time.monotonic()
        timeout = max(0.0, min(self._next_deadline(now), now + 0.5) - now)
        for key, mask in self.selector.select(timeout):
            if key.fd == self._wakeup_r:
                with contextlib.suppress(OSError):
                    while os.read(self._wakeup_r, 512):
                        pass
            elif isinstance(key.data, Worker):
                self._read_channel(key.data)
            else:
                key.data(mask)  # the metrics endpoint's sockets
        while self.signals:
            self._on_signal(self.signals.popleft())
        self._reap()
        self._supervise(time.monotonic())

    def _next_deadline(self, now: float) -> float:
        deadline = now + 0.5
        for worker in self.workers.values():
            deadline = min(deadline, worker.deadline_kill, worker.recycle_at)
            if worker.phase is Phase.READY:
                deadline = min(deadline, worker.last_seen + self.timeout_s)
                if not worker.late:
                    deadline = min(deadline, worker.last_seen + self.late_s)
        for slot in self.slots:
            if slot.respawn_at is not None:
                deadline = min(deadline, slot.respawn_at)
        if self.watchdog_s:
            deadline = min(deadline, self.next_watchdog)
        return min(deadline, self.stop_deadline, self.collect_deadline)

    # -- signals -----------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, self._record_signal)
            if sig != signal.SIGCHLD:
                signal.siginterrupt(sig, False)

    def _record_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return  # reaped in every step
        if sig in (signal.SIGTERM, signal.SIGINT):
            if self.stopping is None:
                log.info("%s: graceful shutdown", signal.Signals(sig).name)
                self._shutdown(StopReason.SHUTDOWN)
            else:
                log.warning("%s again: stopping now", signal.Signals(sig).name)
                self._shutdown(StopReason.IMMEDIATE)
        elif sig == signal.SIGQUIT:
            log.info("QUIT: immediate shutdown")
            self._shutdown(StopReason.IMMEDIATE)
        elif self.stopping is not None:
            return
        elif sig == signal.SIGHUP:
            log.info("HUP: rolling reload of %d workers", len(self.slots))
            self._queue(Reload())
        elif sig == signal.SIGTTIN:
            self._queue(ScaleUp())
        elif sig == signal.SIGTTOU:
            self._queue(ScaleDown())
        elif sig == signal.SIGUSR1:
            reopen_log_files()
            for worker in list(self.workers.values()):
                self._kill(worker, signal.SIGUSR1)

    # -- workers -----------------------------------------------------------------

    def _add_slot(self, index: int) -> Slot:
        slot = Slot(index, self.listeners.for_new_slot(index))
        self.slots.append(slot)
        slot.worker = self._spawn(slot)
        return slot

    def _spawn(self, slot: Slot) -> Worker:
        master_end, worker_end = control.channel_pair()
        max_requests = self.settings.max_requests
        if max_requests and self.settings.max_requests_jitter:
            max_requests += random.randint(0, self.settings.max_requests_jitter)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                sockets = self._become_child(slot, worker_end)
                code = self.spawn_target(slot.index, sockets, worker_end, max_requests)
            except BaseException:  # noqa: BLE001 - whatever happens, the child must exit here
                import traceback

                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        worker_end.close()
        now = time.monotonic()
        worker = Worker(pid, slot, master_end, now, last_seen=now)
        if self.settings.max_lifetime_s:
            jitter = random.uniform(0, self.settings.max_lifetime_jitter_s)
            worker.recycle_at = now + self.settings.max_lifetime_s + jitter
        self.workers[pid] = worker
        self.selector.register(master_end, selectors.EVENT_READ, worker)
        log.info("worker %d booting (slot %d)", pid, slot.index)
        return worker

    def _become_child(self, slot: Slot, channel: socket.socket) -> list[socket.socket]:
        """In the forked child: drop the master's state, keep this slot's sockets."""
        signal.set_wakeup_fd(-1)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)
        self.selector.close()
        for worker in self.workers.values():
            worker.channel.close()
        for other in self.slots:
            if other is not slot:
                for sock in other.sockets:
                    sock.close()
        if self.notifier is not None:
            self.notifier.close()
        if self.metrics_server is not None:
            for conn in list(self.metrics_server.conns.values()):
                conn.sock.close()
            self.metrics_server.listener.close()
        return slot.sockets + self.listeners.shared

    def _read_channel(self, worker: Worker) -> None:
        buffer = self._packet_buffer
        while True:
            try:
                size = worker.channel.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0
            packet = bytes(buffer[:size])
            if not packet:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(worker.channel)
                return  # the worker exited; _reap learns how
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
            elif message.kind is Kind.STATS and self.metrics is not None:
                self.metrics.update(worker.pid, message.payload)
                if message.code == self.collect_round:  # not an older, unasked one
                    self._collect_answered(worker.pid)

    def _on_ready(self, worker: Worker) -> None:
        if worker.phase is not Phase.BOOTING:
            return
        worker.phase = Phase.READY
        slot = worker.slot
        log.info("worker %d ready (slot %d)", worker.pid, slot.index)
        if slot.successor is worker:
            old = slot.worker
            slot.worker, slot.successor = worker, None
            if old is not None:
                reason = self._successor_reason(old)
                if reason is StopReason.RELOAD:
                    self._count_restart("reload")
                elif old.recycle_reason is not None:
                    self._count_restart(RECYCLE_LABELS[old.recycle_reason])
                self._stop_worker(old, reason)
        if self.current is not None:
            self.current.on_ready(self, worker)
        if not self.first_ready and all(
            s.worker is not None and s.worker.phase is Phase.READY for s in self.slots
        ):
            self.first_ready = True
            log.info("all %d workers ready", len(self.slots))
            if self.notifier is not None:
                self.notifier.ready(self._status_line())

    def _successor_reason(self, old: Worker) -> StopReason:
        return StopReason.RECYCLE if old.recycling else StopReason.RELOAD

    def _stop_worker(self, worker: Worker, reason: StopReason) -> None:
        if worker.phase is Phase.STOPPING and reason is not StopReason.IMMEDIATE:
            return
        worker.phase = Phase.STOPPING
        grace = self._grace(reason)
        worker.deadline_kill = min(worker.deadline_kill, time.monotonic() + grace)
        worker.recycle_at = float("inf")
        try:
            worker.channel.send(control.encode(Kind.STOP, reason))
        except OSError:
            self._kill(worker, signal.SIGTERM if reason is not StopReason.IMMEDIATE
                       else signal.SIGQUIT)

    def _grace(self, reason: StopReason) -> float:
        """How long a stopped worker may take before SIGKILL."""
        if reason is StopReason.IMMEDIATE:
            return IMMEDIATE_GRACE_S
        return self.graceful_s + STOP_GRACE_S

    def _kill(self, worker: Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            worker.exit_code = os.waitstatus_to_exitcode(status)
            self._read_channel(worker)  # what it said last (its final metrics) is still there
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(worker.channel)
            worker.channel.close()
            if self.metrics is not None:
                self.metrics.worker_gone(pid, worker.slot.index, usage.ru_utime + usage.ru_stime)
                self._collect_answered(pid)
            self._on_exit(worker)

    def _on_exit(self, worker: Worker) -> None:
        slot, code = worker.slot, worker.exit_code
        how = describe_exit(code)
        if worker.phase is Phase.STOPPING:
            log.info("worker %d (slot %d) stopped (%s)", worker.pid, slot.index, how)
        else:
            log.error("worker %d (slot %d) died (%s)%s", worker.pid, slot.index, how,
                      " before it was ready" if worker.phase is Phase.BOOTING else "")
        if slot.successor is worker:
            slot.successor = None
        elif slot.worker is worker:
            slot.worker = None
            if self.stopping is None and not slot.retiring:
                self._schedule_respawn(worker)
        if self.current is not None:
            self.current.on_exit(self, worker)

    def _schedule_respawn(self, worker: Worker) -> None:
        slot = worker.slot
        if not self.first_ready and worker.exit_code == EXIT_BOOT_FAILED:
            log.error("the application failed to boot: stopping (exit %d)", EXIT_BOOT_FAILED)
            self.exit_code = EXIT_BOOT_FAILED
            self._shutdown(StopReason.IMMEDIATE)
            return
        self._count_restart("crash")
        now = time.monotonic()
        if now - worker.started < FAST_DEATH_S:
            slot.fast_deaths += 1
        else:
            slot.fast_deaths = 0
        delay = 0.0
        if slot.fast_deaths > 1:
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (slot.fast_deaths - 2))
            log.warning("slot %d: workers keep dying at start; next in %.2fs", slot.index, delay)
        slot.respawn_at = now + delay

    # -- supervision -------------------------------------------------------------

    def _supervise(self, now: float) -> None:
        for slot in self.slots:
            if slot.respawn_at is not None and now >= slot.respawn_at and self.stopping is None:
                slot.respawn_at = None
                if slot.worker is None and slot.successor is None and not slot.retiring:
                    slot.worker = self._spawn(slot)
        boot_timeout = max(self.timeout_s, BOOT_TIMEOUT_MIN_S)
        for worker in list(self.workers.values()):
            if now >= worker.deadline_kill:
                if worker.aborted or worker.phase is Phase.STOPPING:
                    log.error("worker %d did not exit in time: SIGKILL", worker.pid)
                    self._kill(worker, signal.SIGKILL)
                    worker.deadline_kill = float("inf")
                continue
            silent = now - worker.last_seen
            if worker.phase is Phase.READY and not worker.late and silent > self.late_s:
                worker.late = True
                log.warning("worker %d (slot %d) late: no heartbeat for %.2fs; its slot's "
                            "connections go to the other workers", worker.pid,
                            worker.slot.index, silent)
            limit = boot_timeout if worker.phase is Phase.BOOTING else self.timeout_s
            if worker.phase is not Phase.STOPPING and silent > limit and not worker.aborted:
                log.error("worker %d (slot %d) silent for %.1fs (timeout %ss): SIGABRT, "
                          "its stacks follow", worker.pid, worker.slot.index, silent, limit)
                worker.aborted = True
                worker.phase = Phase.STOPPING  # it is being replaced, not stopped on purpose
                self._kill(worker, signal.SIGABRT)
                worker.deadline_kill = now + ABORT_GRACE_S
                if worker.slot.worker is worker:
                    self._count_restart("timeout")
                    self._replace_dead(worker)
            elif now >= worker.recycle_at and worker.phase is Phase.READY:
                worker.recycle_at = float("inf")
                self._recycle(worker, RecycleReason.MAX_LIFETIME)
        if self.settings.max_memory_mb and now >= self.next_memory_check:
            self.next_memory_check = now + MEMORY_CHECK_S
            self._check_memory()
        if self.watchdog_s and now >= self.next_watchdog:
            following = self.next_watchdog + self.watchdog_s  # no drift...
            self.next_watchdog = following if following > now else now + self.watchdog_s
            if self._heartbeats_fresh(now) and self.notifier is not None:
                self.notifier.watchdog()
        if self.watcher is not None and now >= self.next_watch and self.stopping is None:
            self.next_watch = now + WATCH_INTERVAL_S
            if self.watcher.changed() and not any(isinstance(o, Reload) for o in self.operations):
                log.info("source files changed: reloading")
                self._queue(Reload())
        if self.current is None and self.operations and self.stopping is None:
            self.current = self.operations.popleft()
            self.current.start(self)
        if self.current is not None:
            self.current.poll(self, now)
        if self.metrics_server is not None:
            self.metrics_server.expire(now)
            if now >= self.collect_deadline:
                self.collect_waiting.clear()
                self._collect_answered(0)
        if self.stopping is not None and now >= self.stop_deadline:
            for worker in list(self.workers.values()):
                self._kill(worker, signal.SIGKILL)
            self.stop_deadline = float("inf")
        self.update_cover()

    # -- covering a slot that cannot accept ------------------------------------------

    def update_cover(self) -> bool:
        """Steer new connections away from slots that cannot accept; lend their listeners.

        Run at the end of every step (and by TTOU when it retires a slot), so
        every change (late, heartbeat again, ready, exit, stop) is acted on
        in the step that saw it. False if the port's reuseport group could
        not be steered as wanted (the kernel refused the program).
        """
        if self.stopping is not None:
            return True  # the listeners are closed or closing
        for slot in self.slots:
            if self._needs_cover(slot):
                self._lend(slot)
            else:
                self._give_back(slot)
        return self._steer()

    def _accepting(self, worker: Worker | None) -> bool:
        return worker is not None and worker.phase is Phase.READY and not worker.late

    def _needs_cover(self, slot: Slot) -> bool:
        # Before the first time every worker is ready there is nobody to lend
        # to; a shared listener (--no-reuse-port) is accepted by every worker.
        return (self.first_ready and bool(slot.sockets) and not slot.retiring
                and not self._accepting(slot.worker))

    def _lend(self, slot: Slot) -> None:
        adopter = slot.adopter
        if adopter is not None:
            if adopter.pid in self.workers and self._accepting(adopter) \
                    and not adopter.slot.retiring:
                return
            self._give_back(slot)  # it stopped, died or is late itself: lend anew
        candidates = [s.worker for s in self.slots if s is not slot and not s.retiring
                      and s.worker is not None and self._accepting(s.worker)]
        if not candidates:
            return  # nobody can accept: steering alone (or nothing) until one can
        # The one lent the fewest slots already.
        chosen = min(candidates, key=lambda w: sum(1 for s in self.slots if s.adopter is w))
        try:
            control.send_adopt(chosen.channel, slot.index, slot.sockets)
        except OSError as exc:
            log.warning("slot %d: cannot lend its listeners to worker %d: %s",
                        slot.index, chosen.pid, exc)
            return
        slot.adopter = chosen
        log.info("slot %d: worker %d accepts its connections until the slot's worker does",
                 slot.index, chosen.pid)

    def _give_back(self, slot: Slot) -> None:
        adopter, slot.adopter = slot.adopter, None
        if adopter is None or adopter.pid not in self.workers:
            return
        with contextlib.suppress(OSError):
            adopter.channel.send(control.encode(Kind.RELEASE, 0, slot.index))
        log.info("slot %d: worker %d gives its listeners back", slot.index, adopter.pid)

    def _steer(self) -> bool:
        """Point each reuseport group at the slots that accept (or back to the hash)."""
        live = [i for i, slot in enumerate(self.slots) if not slot.retiring]
        allowed = [i for i in live if not self._needs_cover(self.slots[i])] or live
        want = None if len(allowed) == len(self.slots) else tuple(allowed)
        if want == self.steering or not self.slots or not self.slots[0].sockets:
            return self.steering_ok
        ok = True
        for group in range(len(self.slots[0].sockets)):
            # Any open socket of the group carries the program for all of it.
            sock = next((s.sockets[group] for s in self.slots
                         if len(s.sockets) > group and s.sockets[group].fileno() != -1), None)
            if sock is None:
                continue
            if want is None:
                reuseport.stop_steering(sock)
            elif not reuseport.steer(sock, want):
                ok = False
        if want is not None:
            log.info("new connections go to slots %s", ", ".join(map(str, want)))
        elif self.steering is not None:
            log.info("new connections go to every slot again")
        self.steering, self.steering_ok = want, ok
        return ok

    def _replace_dead(self, worker: Worker) -> None:
        """A hung worker is being killed: its slot gets a new worker at once."""
        slot = worker.slot
        slot.worker = None
        if self.stopping is None and not slot.retiring:
            slot.respawn_at = time.monotonic()

    def _heartbeats_fresh(self, now: float) -> bool:
        """Every serving worker heartbeat recently (within seconds, not --timeout).

        Wider than ``late_after``: a worker late for a moment has its slot
        covered, but does not cost the whole service a watchdog ping.
        """
        serving = [s.worker for s in self.slots if s.worker is not None]
        fresh = min(0.75 * self.timeout_s, WATCHDOG_FRESH_S)
        return bool(serving) and all(
            w.phase is Phase.READY and now - w.last_seen <= fresh for w in serving
        )

    def _check_memory(self) -> None:
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil is a dependency
            return
        limit = self.settings.max_memory_mb * 1024 * 1024
        for slot in self.slots:
            worker = slot.worker
            if worker is None or worker.phase is not Phase.READY or worker.recycling:
                continue
            try:
                rss = psutil.Process(worker.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > limit:
                log.warning("worker %d uses %d MiB (max-memory %d)", worker.pid,
                            rss // 1048576, self.settings.max_memory_mb)
                self._recycle(worker, RecycleReason.MAX_MEMORY)

    def _recycle(self, worker: Worker, reason: RecycleReason) -> None:
        if worker.recycling or worker.phase is not Phase.READY or self.stopping is not None:
            return
        worker.recycling = True
        worker.recycle_reason = reason
        log.info("worker %d (slot %d): recycling (%s)", worker.pid, worker.slot.index,
                 reason.name.lower().replace("_", "-"))
        self._queue(Recycle(worker))

    def _queue(self, operation: Operation) -> None:
        self.operations.append(operation)

    # -- stopping ----------------------------------------------------------------

    def _shutdown(self, reason: StopReason) -> None:
        first = self.stopping is None
        self.stopping = reason
        if first and self.notifier is not None:
            self.notifier.stopping("stopping")
        if first:
            # New connections are refused from now on: close our listeners
            # (each worker closes its copy as it starts draining).
            self._close_listeners()
        grace = self._grace(reason)
        self.stop_deadline = min(self.stop_deadline, time.monotonic() + grace)
        for worker in list(self.workers.values()):
            self._stop_worker(worker, reason)

    def _close_listeners(self) -> None:
        for slot in self.slots:
            for sock in slot.sockets:
                sock.close()
        for sock in self.listeners.shared:
            sock.close()

    def _close_all(self) -> None:
        self._close_listeners()
        if self.metrics_server is not None:
            self.metrics_server.close()
        for worker in self.workers.values():
            worker.channel.close()
        self.selector.close()
        for fd in (self._wakeup_r, self._wakeup_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- status ------------------------------------------------------------------

    def _status_line(self) -> str:
        ready = sum(1 for w in self.workers.values() if w.phase is Phase.READY)
        return f"{ready} of {len(self.slots)} workers ready"

    def _status(self, text: str) -> None:
        if self.notifier is not None:
            self.notifier.status(text)

    # -- metrics and health ----------------------------------------------------------

    def _start_metrics(self, listener: socket.socket) -> None:
        from app_server.master.metrics_http import MetricsServer
        from app_server.metrics.store import MetricsStore

        self.metrics = MetricsStore()
        self.metrics.workers = self._worker_view
        self.metrics.desired_workers = lambda: sum(not s.retiring for s in self.slots)
        self.metrics.memory_limit_bytes = self.settings.max_memory_mb * 1024 * 1024
        self.metrics_server = MetricsServer(listener, self.selector, self)
        host, port = self.metrics_server.address
        log.info("metrics on http://%s:%d/metrics (/healthz, /readyz)", host, port)

    def _count_restart(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.restarted(reason)

    def healthy(self) -> bool:
        return any(w.phase is Phase.READY for w in self.workers.values())

    def ready(self) -> bool:
        return self.stopping is None and all(
            s.worker is not None and s.worker.phase is Phase.READY
            for s in self.slots if not s.retiring
        )

    def start_collect(self) -> None:
        """A scrape: ask every live worker for a fresh snapshot (bounded wait)."""
        self.collect_waiting = set()
        self.collect_round = self.collect_round % 255 + 1  # 1..255; 0 means unasked
        packet = control.encode(Kind.COLLECT, self.collect_round)
        for worker in self.workers.values():
            if worker.phase is Phase.BOOTING:
                continue
            try:
                worker.channel.send(packet)
            except OSError:
                continue
            self.collect_waiting.add(worker.pid)
        self.collect_deadline = time.monotonic() + COLLECT_TIMEOUT_S
        self._collect_answered(0)

    def _collect_answered(self, pid: int) -> None:
        self.collect_waiting.discard(pid)
        if not self.collect_waiting and self.collect_deadline != float("inf"):
            self.collect_deadline = float("inf")
            self.metrics_server.collected()

    def render(self) -> bytes:
        return self.metrics.render()  # type: ignore[no-any-return]

    def _worker_view(self) -> WorkerView:
        import psutil

        states = {"starting": 0, "ready": 0, "stopping": 0}
        names = {Phase.BOOTING: "starting", Phase.READY: "ready", Phase.STOPPING: "stopping"}
        for worker in self.workers.values():
            states[names[worker.phase]] += 1
        # RSS: each slot's serving worker. CPU: every live worker of the slot
        # (a reload's old and new worker overlap), so that with the CPU of its
        # exited workers (from wait4) the slot's counter never goes down.
        rss: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for worker in self.workers.values():
            index = worker.slot.index
            try:
                process = psutil.Process(worker.pid)
                with process.oneshot():
                    times = process.cpu_times()
                    if worker.slot.worker is worker:
                        rss[index] = process.memory_info().rss
            except psutil.Error:
                continue
            cpu[index] = cpu.get(index, 0.0) + times.user + times.system
        slots = [(index, rss.get(index, 0), seconds) for index, seconds in sorted(cpu.items())]
        return WorkerView(states, slots)

    # -- used by operations --------------------------------------------------------

    def start_successor(self, slot: Slot) -> Worker:
        slot.successor = self._spawn(slot)
        return slot.successor

    def retire_last_slot(self) -> Slot:
        slot = self.slots[-1]
        slot.retiring = True
        return slot


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

