"""What the rest of the server may know of metrics: the sinks, as protocols.

Owns: ``MasterMetrics``, everything the master records or asks of metrics
(worker snapshots in, restarts and reloads counted, a rendering out), its
no-op ``NullMasterMetrics`` (metrics off), and ``WorkerView``, the data the
master hands over for a scrape. ``cli`` chooses the implementation
(``metrics.store.MetricsStore`` when ``--metrics-bind`` is set) and passes
it in, so the master depends on this interface only. The worker's sink is
to be added here next to it.

Rule: imports nothing from the package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass
class WorkerView:
    """What the metrics need from the master: workers by state, each slot's usage."""

    states: dict[str, int]
    slots: list[tuple[int, int, float]]  # slot, RSS bytes, CPU seconds of its current worker
    desired: int = 0  # the worker count the master keeps (--workers, changed by scaling)
    # Channel deliveries the master's relay dropped for workers that fell behind.
    relay_dropped: int = 0


class MasterMetrics(Protocol):
    """The master's metrics sink; ``workers`` is set by the master to its live view."""

    workers: Callable[[], WorkerView] | None

    def update(self, pid: int, payload: bytes) -> None:
        """Worker ``pid`` sent a snapshot (STATS)."""

    def worker_gone(self, pid: int, slot: int, cpu_seconds: float) -> None:
        """Worker ``pid`` of ``slot`` exited after using ``cpu_seconds``."""

    def restarted(self, reason: str) -> None:
        """A slot got a new worker: crash, timeout, reload, scale or a recycle label."""

    def reloaded(self, ok: bool) -> None:
        """A rolling reload ended, complete or aborted."""

    def render(self) -> bytes:
        """The exposition text for a scrape."""


class NullMasterMetrics:
    """Metrics off: every record is dropped, a rendering is empty."""

    def __init__(self) -> None:
        self.workers: Callable[[], WorkerView] | None = None

    def update(self, pid: int, payload: bytes) -> None:
        pass

    def worker_gone(self, pid: int, slot: int, cpu_seconds: float) -> None:
        pass

    def restarted(self, reason: str) -> None:
        pass

    def reloaded(self, ok: bool) -> None:
        pass

    def render(self) -> bytes:
        return b""
