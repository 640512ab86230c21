"""The master's side of a scrape: ``/metrics``, ``/healthz``, ``/readyz`` answers.

Owns: ``Scrape``, the ``metrics_http.Endpoints`` the metrics server calls
back: health and readiness from the slot table, a collection round (COLLECT
to every live worker, wait for their STATS until all answered or
``log = logging.getLogger("app_server.error")
COLLECT_TIMEOUT_S``), the rendering by the ``MasterMetrics`` sink, and
``worker_view`` (workers by state, each slot's RSS and CPU, read with
psutil at scrape time only). It is one selector-registered component of the
master's loop: the loop calls ``on_stats``, ``worker_gone``, ``expire`` and
reads ``deadline``, nothing more.

Rule: imports nothing from the package but ``control``, ``metrics.sink``
and ``master.*``.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from app_server import control
from app_server.control import Kind
from app_server.master.metrics_http import MetricsServer
from app_server.master.model import Phase, Slot, Worker
from app_server.master.policies import all_ready
from app_server.master.relay import Relay
from app_server.metrics.sink import MasterMetrics, WorkerView

log = logging.getLogger("app_server.error")
COLLECT_TIMEOUT_S = 0.5  # a scrape waits at most this long for the workers' snapshots
_STATE_NAMES = {Phase.BOOTING: "starting", Phase.READY: "ready", Phase.STOPPING: "stopping"}


class Supervised(Protocol):
    """What a scrape reads of the master's children (``master.children.Children``)."""

    @property
    def workers(self) -> Mapping[int, Worker]: ...

    @property
    def slots(self) -> Sequence[Slot]: ...

    @property
    def relay(self) -> Relay | None: ...


class Scrape:
    def __init__(
        self,
        master: Supervised,
        is_stopping: Callable[[], bool],
        metrics: MasterMetrics,
        listener: socket.socket,
        selector: selectors.BaseSelector,
    ) -> None:
        self.master, self.is_stopping = master, is_stopping
        self.metrics = metrics
        metrics.workers = self.worker_view
        self.server = MetricsServer(listener, selector, self)
        self.waiting: set[int] = set()
        self.round = 0
        self.deadline = float("inf")
        log.info("metrics on http://%s:%d/metrics (/healthz, /readyz)", *self.server.address)

    def healthy(self) -> bool:
        return any(w.phase is Phase.READY for w in self.master.workers.values())

    def ready(self) -> bool:
        return not self.is_stopping() and all_ready(self.master.slots)

    def start_collect(self) -> None:
        """A scrape: ask every live worker for a fresh snapshot (bounded wait)."""
        self.waiting = set()
        self.round = self.round % 255 + 1  # 1..255; 0 means unasked
        packet = control.encode(Kind.COLLECT, self.round)
        for worker in self.master.workers.values():
            if worker.phase is Phase.BOOTING:
                continue
            try:
                worker.channel.send(packet)
            except OSError:
                continue
            self.waiting.add(worker.pid)
        self.deadline = time.monotonic() + COLLECT_TIMEOUT_S
        self.answered(0)

    def on_stats(self, pid: int, answer: int) -> None:
        if answer == self.round:  # not an older, unasked one
            self.answered(pid)

    def answered(self, pid: int) -> None:
        self.waiting.discard(pid)
        if not self.waiting and self.deadline != float("inf"):
            self.deadline = float("inf")
            self.server.collected()

    def expire(self, now: float) -> None:
        self.server.expire(now)
        if now >= self.deadline:
            self.waiting.clear()
            self.answered(0)

    def render(self) -> bytes:
        return self.metrics.render()

    def close_in_child(self) -> None:
        """In a forked worker: drop the master's sockets without shutting them down."""
        for conn in list(self.server.conns.values()):
            conn.sock.close()
        self.server.listener.close()

    def worker_view(self) -> WorkerView:
        import psutil  # only when a scrape asks

        states = dict.fromkeys(_STATE_NAMES.values(), 0)
        for worker in self.master.workers.values():
            states[_STATE_NAMES[worker.phase]] += 1
        # RSS: each slot's serving worker. CPU: every live worker of the slot
        # (a reload's old and new worker overlap), so that with the CPU of its
        # exited workers (from wait4) the slot's counter never goes down.
        rss: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for worker in self.master.workers.values():
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
        desired = sum(not slot.retiring for slot in self.master.slots)
        relay = self.master.relay
        return WorkerView(states, slots, desired, relay.dropped if relay is not None else 0)
