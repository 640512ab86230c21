"""The master process: a thin loop that turns what happens into events and actions.

Owns: ``Master``, the single-threaded loop. Each step waits on a selector
(the workers' control channels, the signal inbox's self-pipe, and components
with a callback such as the metrics endpoint) until the next deadline, then
drains signals, reaps children and ticks. The records and what is done to
them are ``master.children``'s. The decisions are pure: the operations
(``master.operations``: reload on HUP or changed sources, recycle, TTIN,
TTOU, and the same asked through the control socket; one at a time, in
order) are fed events and return actions that ``_carry_out`` executes;
``master.policies`` decides backoff, lateness, hung workers, recycling, the
watchdog and the cover of slots that cannot accept. TERM/INT: STOP(shutdown)
to every worker, exit once they are gone; a second one or QUIT:
STOP(immediate). USR1: reopen log files here and in the workers. HUP first
asks ``reconfigure`` (the config file read again): an invalid file aborts
that reload with one line; a changed ``workers`` count is applied by scaling
around it. ``app-server ctl``'s requests (the socket is
``master.ctl_server``'s, what they do ``master.commands``') map to the same
operations and signals; ``reload --wait`` is answered once the reload ended
and every worker it retired has exited.

Rule: never imports the framework, the protocols or the worker runtime (the
code a child runs is handed in as ``spawn_target``), nor a metrics
implementation (``cli`` passes a ``metrics.sink.MasterMetrics``).
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable

from app_server import control
from app_server.control import Kind, RecycleReason, StopReason
from app_server.logs import ERROR_LOGGER, reopen_log_files
from app_server.master import actions as act
from app_server.master import policies, process
from app_server.master.children import Children, SpawnTarget
from app_server.master.commands import Commands
from app_server.master.cover import Cover
from app_server.master.ctl_server import ControlServer, ReloadWaits
from app_server.master.model import Listeners, Worker
from app_server.master.operations import Operation, Recycle, Reload, ScaleDown, ScaleUp
from app_server.master.relay import Relay
from app_server.master.scrape import Scrape
from app_server.master.systemd import Notifier
from app_server.master.watch import SourceWatcher
from app_server.metrics.sink import MasterMetrics, NullMasterMetrics
from app_server.settings.model import SupervisorSettings

log = logging.getLogger(ERROR_LOGGER)
MEMORY_CHECK_S = 1.0
WATCH_INTERVAL_S = 1.0  # --reload: how often the sources are looked at
_OPERATIONS: dict[int, type[Operation]] = {
    signal.SIGTTIN: ScaleUp,
    signal.SIGTTOU: ScaleDown,
}
# HUP: the config file read again, validated; new supervisor settings, or the
# one line saying why the reload is aborted.
Reconfigure = Callable[[], "SupervisorSettings | str"]


class Master:
    def __init__(
        self,
        settings: SupervisorSettings,
        graceful_timeout_s: float,
        listeners: Listeners,
        spawn_target: SpawnTarget,
        notifier: Notifier | None = None,
        watchdog_s: float | None = None,
        watch_dir: str | None = None,
        metrics_listener: socket.socket | None = None,
        metrics: MasterMetrics | None = None,
        control_listener: tuple[socket.socket, str] | None = None,
        reconfigure: Reconfigure | None = None,
        relay: bool = False,
    ) -> None:
        self.settings, self.notifier, self.watchdog_s = settings, notifier, watchdog_s
        self.metrics = metrics if metrics is not None else NullMasterMetrics()
        self.selector = selectors.DefaultSelector()
        self.children = Children(
            settings,
            graceful_timeout_s,
            listeners,
            spawn_target,
            self.selector,
            self.metrics,
            self._close_in_child,
        )
        self.slots, self.workers = self.children.slots, self.children.workers  # shared, not copies
        if relay:  # --channels master: the master relays channel messages between workers
            self.children.relay = Relay(self.selector)
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
        self.metrics_listener = metrics_listener
        self.scrape: Scrape | None = None
        self.control_listener, self.reconfigure = control_listener, reconfigure
        self.ctl: ControlServer | None = None
        self.waits: ReloadWaits | None = None
        self.started = time.monotonic()

    def run(self) -> int:
        self.inbox.install(self.selector)
        if self.metrics_listener is not None:
            self.scrape = Scrape(
                self.children,
                lambda: self.stopping is not None,
                self.metrics,
                self.metrics_listener,
                self.selector,
            )
        if self.control_listener is not None:
            self.ctl = ControlServer(*self.control_listener, self.selector, Commands(self).handle)
            self.waits = ReloadWaits(self.ctl.answer)
        try:
            for index in range(self.settings.workers):
                self.children.add_slot(index)
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
        wakeup = min(
            policies.next_wakeup(self.workers.values(), self.slots, self.children.deadlines, now),
            self.next_watchdog if self.watchdog_s else now + 0.5,
            self.stop_deadline,
            self.scrape.deadline if self.scrape is not None else now + 0.5,
            self.ctl.deadline if self.ctl is not None else now + 0.5,
        )
        for key, mask in self.selector.select(max(0.0, wakeup - now)):
            if key.data is self.inbox:
                self.inbox.drain_wakeups()
            elif isinstance(key.data, Worker):
                self._read(key.data)
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
            self.shutdown(StopReason.IMMEDIATE)
        elif sig in (signal.SIGTERM, signal.SIGINT):
            name, again = signal.Signals(sig).name, self.stopping is not None
            if again:
                log.warning("%s again: stopping now", name)
            else:
                log.info("%s: graceful shutdown", name)
            self.shutdown(StopReason.IMMEDIATE if again else StopReason.SHUTDOWN)
        elif self.stopping is not None or sig == signal.SIGCHLD:
            return  # SIGCHLD: children are reaped in every step
        elif sig == signal.SIGHUP:
            self.reload("HUP")
        elif sig in _OPERATIONS:
            self.operations.append(_OPERATIONS[sig]())
        elif sig == signal.SIGUSR1:
            self.reopen_logs()

    def reopen_logs(self) -> None:
        reopen_log_files()
        self.children.kill_all(signal.SIGUSR1)

    # -- what the workers do --------------------------------------------------------------

    def _read(self, worker: Worker) -> None:
        for message in self.children.messages(worker):
            if message.kind is Kind.READY:
                self._on_ready(worker)
            elif message.kind is Kind.RECYCLE:
                self._recycle(worker, RecycleReason(message.code))
            elif message.kind is Kind.HEARTBEAT:
                beat = control.heartbeat_of(message)
                worker.requests = beat.requests
                worker.http_connections, worker.websockets = beat.http_connections, beat.websockets
            elif message.kind is Kind.STATS:
                self.metrics.update(worker.pid, message.payload)
                if self.scrape is not None:
                    self.scrape.on_stats(worker.pid, message.code)

    def _on_ready(self, worker: Worker) -> None:
        if not self.children.mark_ready(worker):
            return
        self._dispatch(act.WorkerReady(worker))
        if not self.first_ready and policies.all_ready(self.slots):
            self.first_ready = True
            log.info("all %d workers ready", len(self.slots))
            if self.notifier is not None:
                self.notifier.ready(self.children.status_line())

    def _on_reaped(self, pid: int, code: int, cpu_s: float) -> None:
        worker = self.workers.get(pid)
        if worker is None:
            return
        worker.exit_code = code
        self._read(worker)  # what it said last (its final metrics) is still there
        if self.children.forget(worker, cpu_s) and self.stopping is None:
            if policies.gives_up(self.first_ready, code):
                log.error("the application failed to boot: stopping (exit %d)", code)
                self.exit_code = code
                self.shutdown(StopReason.IMMEDIATE)
            else:
                self.children.schedule_respawn(worker)
        if self.scrape is not None:
            self.scrape.answered(pid)
        self._dispatch(act.WorkerExited(worker))
        if self.waits is not None:
            self.waits.exited(pid)

    def _recycle(self, worker: Worker, reason: RecycleReason) -> None:
        if self.children.mark_recycling(worker, reason, self.stopping is not None):
            self.operations.append(Recycle(worker))

    # -- every step --------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        if self.stopping is None:
            self.children.respawn_due(now)
        self.children.check_relay(now, self.stopping is not None)
        for worker in self.children.check(now, self.stopping is not None):
            self._recycle(worker, RecycleReason.MAX_LIFETIME)
        if self.settings.max_memory_mb and now >= self.next_memory_check:
            self.next_memory_check = now + MEMORY_CHECK_S
            for worker in self.children.over_memory():
                self._recycle(worker, RecycleReason.MAX_MEMORY)
        if self.watchdog_s and now >= self.next_watchdog:
            self.next_watchdog = policies.next_period(self.next_watchdog, self.watchdog_s, now)
            if self.notifier is not None and policies.heartbeats_fresh(
                self.slots, now, self.children.deadlines.timeout_s
            ):
                self.notifier.watchdog()
        if self.watcher is not None and now >= self.next_watch and self.stopping is None:
            self.next_watch = now + WATCH_INTERVAL_S
            if self.watcher.changed() and not any(isinstance(o, Reload) for o in self.operations):
                log.info("source files changed: reloading")
                self.reload("--reload")
        if self.current is None and self.operations and self.stopping is None:
            self.current = self.operations.popleft()
            self._dispatch(act.Started())
        self._dispatch(act.Tick(self.children.queued_on_retiring()))
        if self.scrape is not None:
            self.scrape.expire(now)
        if self.ctl is not None:
            self.ctl.expire(now)
        if self.stopping is not None and now >= self.stop_deadline:
            self.children.kill_all(signal.SIGKILL)
            self.stop_deadline = float("inf")
        self.update_cover()

    def update_cover(self) -> bool:
        """Steer new connections away from slots that cannot accept; lend their listeners."""
        if self.stopping is not None:
            return True  # the listeners are closed or closing
        return self.cover.apply(self.slots, policies.plan_cover(self.slots, self.first_ready))

    # -- operations ---------------------------------------------------------------------

    def _dispatch(self, event: act.Event) -> None:
        if self.current is not None:
            view = act.MasterView(tuple(self.slots), self.stopping is not None, time.monotonic())
            for action in self.current.handle(event, view):
                self._carry_out(action)

    def _carry_out(self, action: act.Action) -> None:
        if isinstance(action, act.AddSlot):
            self._add_slot()
        elif isinstance(action, act.NotifyReloading):
            if self.notifier is not None:
                self.notifier.reloading()
        elif isinstance(action, act.ReloadEnded):
            self._reload_ended(action)
        elif isinstance(action, act.Finished):
            self.current = None
        else:  # on workers and slots
            self.children.carry_out(action)
            if isinstance(action, act.RetireSlot | act.RemoveSlot):
                # Steering skips a retiring slot (the last of the group) from now
                # on, and stops skipping it once it is gone.
                steered = self.update_cover()
                if isinstance(action, act.RetireSlot) and action.slot.sockets and not steered:
                    log.warning(
                        "TTOU: cannot steer connections away from the retiring "
                        "listener; connections queued on it at close may be reset"
                    )

    def _add_slot(self) -> None:
        try:
            self.children.add_slot(len(self.slots))
        except OSError as exc:
            log.error("TTIN: cannot add a worker: %s", exc)
            self._dispatch(act.AddSlotFailed())
            return
        log.info("TTIN: %d workers", len(self.slots))

    def _reload_ended(self, action: act.ReloadEnded) -> None:
        if self.waits is not None:
            self.waits.ended(
                self.current, action.failure, action.retired, action.replaced, action.took_s
            )
        if action.failure is None:
            log.info(
                "reload complete: %d workers replaced in %.2fs", action.replaced, action.took_s
            )
        else:
            log.error("reload aborted: %s", action.failure)
        self.metrics.reloaded(action.failure is None)
        if self.notifier is not None and self.stopping is None:
            self.notifier.ready(
                "reload failed: " + action.failure
                if action.failure
                else self.children.status_line()
            )

    # -- reload, and the control socket ------------------------------------------------------

    def reload(self, why: str) -> Reload | str:
        """HUP or ``ctl reload``: the config file again, then a rolling reload.

        Returns the queued reload, or the reason it was not (an invalid config).
        """
        scale = 0
        if self.reconfigure is not None:
            settings = self.reconfigure()
            if isinstance(settings, str):
                log.error(
                    "%s: reload aborted: %s; the running workers and settings keep serving",
                    why,
                    settings,
                )
                # A failed reload for the metrics (and alerts), and for systemd's
                # notify-reload, which waits for RELOADING=1 ... READY=1 after HUP.
                self.metrics.reloaded(False)
                if self.notifier is not None:
                    self.notifier.reloading()
                    self.notifier.ready("reload failed: " + settings)
                return settings
            scale = settings.workers - self.desired()
            self._apply(settings)
        log.info("%s: rolling reload of %d workers", why, len(self.slots))
        # Fewer workers: retire first (fewer to reload); more: after, so the
        # new ones are not reloaded twice.
        self.operations.extend(ScaleDown() for _ in range(max(0, -scale)))
        reload = Reload()
        self.operations.append(reload)
        self.operations.extend(ScaleUp() for _ in range(max(0, scale)))
        return reload

    def _apply(self, settings: SupervisorSettings) -> None:
        """New supervisor settings (the ones that need no restart): spawns read them."""
        self.settings = self.children.settings = settings
        self.children.deadlines = policies.Deadlines(
            settings.timeout_s, control.late_after(settings.timeout_s)
        )

    def desired(self) -> int:
        """The worker count once the queued operations are done."""
        count = len([s for s in self.slots if not s.retiring])
        for op in ([self.current] if self.current is not None else []) + list(self.operations):
            if isinstance(op, ScaleUp) and op.index < 0:
                count += 1
            elif isinstance(op, ScaleDown) and op.slot is None:
                count -= 1
        return count

    # -- stopping -----------------------------------------------------------------------

    def shutdown(self, reason: StopReason) -> None:
        if self.waits is not None:
            self.waits.abandon("the server is stopping")
        if self.stopping is None:
            if self.notifier is not None:
                self.notifier.stopping("stopping")
            # New connections are refused from now on: close our listeners
            # (each worker closes its copy as it starts draining).
            self.children.close_listeners()
        self.stopping = reason
        grace = policies.stop_grace(reason, self.children.graceful_s)
        self.stop_deadline = min(self.stop_deadline, time.monotonic() + grace)
        self.children.stop_all(reason)

    def _close_in_child(self) -> None:
        """In a forked worker: drop the master's own descriptors."""
        self.inbox.restore()
        self.inbox.close()
        if self.notifier is not None:
            self.notifier.close()
        if self.scrape is not None:
            self.scrape.close_in_child()
        if self.ctl is not None:
            self.ctl.close_in_child()

    def _close_all(self) -> None:
        self.children.close_listeners()
        if self.scrape is not None:
            self.scrape.server.close()
        if self.ctl is not None:
            self.ctl.close()
        for worker in self.workers.values():
            worker.channel.close()
        if self.children.relay is not None:
            self.children.relay.close()
        self.selector.close()
        self.inbox.close()
